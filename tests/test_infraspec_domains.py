"""infraspec `domains` and `https`: the host names an app is served on, and
how the ingress treats plain HTTP for them (docs/infraspec.md)."""

import textwrap

import pytest
import yaml

from apps_registry import infraspec
from apps_registry.spec import Spec

FILE = "apps/web/infraspec.yaml"


def parse(text, directory="web"):
    return infraspec.parse(textwrap.dedent(text), FILE, directory)


def parse_dict(data):
    return infraspec.parse(yaml.safe_dump({"app": "web", "role": "webserver", **data}, sort_keys=False), FILE, "web")


def only_error(result):
    assert not result.ok, "expected a validation error"
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return result.errors[0]


def test_domains_are_lower_cased_unique_and_keep_their_order():
    result = parse("""
        app: web
        role: webserver
        domains: [Shop.Example.COM, www.shop.example.com, shop.localhost, localhost, a-b.c0.example]
        https: both
    """)
    assert result.ok, [str(e) for e in result.errors]
    assert result.data["domains"] == ["shop.example.com", "www.shop.example.com", "shop.localhost", "localhost", "a-b.c0.example"]
    assert result.spec.domains == ("shop.example.com", "www.shop.example.com", "shop.localhost", "localhost", "a-b.c0.example")
    assert result.spec.https == "both"
    assert result.spec.port is None
    assert Spec.from_dict(result.data) == result.spec
    assert result.spec.to_dict() == result.data


def test_without_domains_the_spec_has_none_and_https_redirect():
    result = parse_dict({"port": 8000})
    assert result.ok
    assert (result.data["domains"], result.data["https"]) == ([], "redirect")
    assert (result.spec.domains, result.spec.https) == ((), "redirect")
    # A spec stored before the fields existed reads the same.
    stored = dict(result.data)
    del stored["domains"], stored["https"]
    assert Spec.from_dict(stored) == result.spec


@pytest.mark.parametrize("mode", ["redirect", "both", "off"])
def test_https_modes(mode):
    result = parse_dict({"domains": ["shop.example.com"], "https": mode})
    assert result.ok, result.errors
    assert result.spec.https == mode


def test_https_defaults_to_redirect():
    assert parse_dict({"domains": ["shop.example.com"]}).spec.https == "redirect"


@pytest.mark.parametrize("mode", ["on", "true", "HTTPS", "", "Redirect"])
def test_an_unknown_https_mode_names_the_valid_ones(mode):
    error = only_error(parse_dict({"domains": ["shop.example.com"], "https": mode}))
    assert error.field == "https"
    assert error.message.startswith(f"{mode!r} is not an https mode; use redirect")
    assert "both" in error.message and "off" in error.message


@pytest.mark.parametrize("plain", ["off", "Off", "no", "false"])
def test_a_plain_off_which_yaml_reads_as_false_is_off(plain):
    result = parse(f"""
        app: web
        role: webserver
        domains: [shop.example.com]
        https: {plain}
    """)
    assert result.ok, [str(e) for e in result.errors]
    assert (result.data["https"], result.spec.https) == ("off", "off")


@pytest.mark.parametrize("plain", ["on", "yes", "true"])
def test_a_plain_on_which_yaml_reads_as_true_is_an_error(plain):
    error = only_error(parse(f"""
        app: web
        role: webserver
        domains: [shop.example.com]
        https: {plain}
    """))
    assert (error.line, error.field) == (5, "https")
    assert error.message.startswith("true is not an https mode (YAML reads on, yes and true as true); use redirect")


def test_https_must_be_a_string():
    error = only_error(parse_dict({"domains": ["shop.example.com"], "https": 443}))
    assert (error.field, error.message) == ("https", "443 is not a string or true or false")


def test_https_without_domains_is_an_error():
    error = only_error(parse_dict({"port": 8000, "https": "off"}))
    assert (error.field, error.message) == ("https", "applies to domains; add domains")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("*.example.com", "is a wildcard; wildcard domains need DNS challenges, which Norn does not configure; list each name"),
        ("192.0.2.10", "is an IP address; domains are host names (use port: for an address)"),
        ("2001:db8::1", "is an IP address"),
        ("[::1]", "is an IP address"),
        ("https://shop.example.com", "is a URL; give the host name only"),
        ("shop.example.com:8443", "has a port"),
        ("shop.example.com/path", "has a path"),
        ("shop.example.com.", "ends with '.'; write the name without the trailing dot"),
        ("shop", "is a single label; use a full host name like shop.example.com (or NAME.localhost)"),
        ("-shop.example.com", "has the label '-shop'"),
        ("shop-.example.com", "has the label 'shop-'"),
        ("shop_1.example.com", "has the label 'shop_1'"),
        ("a" * 64 + ".example.com", "each label is 1 to 63 letters, digits and '-'"),
        ("shop..example.com", "has an empty label"),
        (".example.com", "has an empty label"),
        ("shop example.com", "has the label 'shop example'"),
        ("1.2.3", "ends in an all-digit label"),
        ("bücher.example", "is not ASCII; write an international name in its xn-- form (xn--bcher-kva.example)"),
        ("", "is empty"),
        (("a" * 60 + ".") * 5 + "example", "is 312 characters long; a host name has at most 253"),
    ],
)
def test_invalid_domains_name_their_index_line_and_value(name, expected):
    result = parse(f"""
        app: web
        role: webserver
        domains:
          - good.example.com
          - {yaml.safe_dump(name, width=10**6).splitlines()[0] if name else "''"}
    """)
    error = only_error(result)
    assert (error.line, error.field) == (6, "domains[1]")
    assert expected in error.message
    shown = repr(name) if len(repr(name)) <= 80 else None
    if shown:
        assert error.message.startswith(shown)
    assert str(error).startswith(f"{FILE}:6: domains[1]: ")


def test_a_name_of_253_characters_is_allowed():
    name = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(name) == 253
    assert parse_dict({"domains": [name]}).ok
    error = only_error(parse_dict({"domains": [name + "b"]}))
    assert "is 254 characters long; a host name has at most 253" in error.message


def test_duplicates_are_found_regardless_of_case():
    error = only_error(parse_dict({"domains": ["shop.example.com", "www.example.com", "SHOP.example.com"]}))
    assert error.field == "domains[2]"
    assert error.message == "'SHOP.example.com' is listed twice (also domains[0]); keep one"


def test_every_bad_domain_is_reported_at_once():
    result = parse("""
        app: web
        role: webserver
        domains:
          - ok.example.com
          - 10.0.0.1
          - ok.example.com
          - 7
    """)
    assert [(e.line, e.field) for e in result.errors] == [(6, "domains[1]"), (7, "domains[2]"), (8, "domains[3]")]
    assert result.errors[2].message == "7 is not a string; give a host name like shop.example.com"


@pytest.mark.parametrize("value", ["shop.example.com", {"a": "b"}, 5])
def test_domains_must_be_a_list(value):
    error = only_error(parse_dict({"domains": value}))
    assert error.field == "domains"
    assert "is not a list" in error.message


def test_an_empty_list_and_too_many_names_are_errors():
    error = only_error(parse_dict({"domains": []}))
    assert (error.field, error.message) == ("domains", "has 0 names; list from 1 to 100, or leave domains out")
    names = [f"n{i}.example.com" for i in range(100)]
    assert parse_dict({"domains": names}).ok
    error = only_error(parse_dict({"domains": names + ["n100.example.com"]}))
    assert (error.field, error.message) == ("domains", "has 101 names; list from 1 to 100, or leave domains out")


def test_a_huge_list_costs_one_short_error():
    names = [f"n{i}.io" for i in range(5000)]
    result = parse_dict({"domains": names})
    assert [e.message for e in result.errors] == ["has 5000 names; list from 1 to 100, or leave domains out"]


@pytest.mark.parametrize("role", ["worker", "cron"])
def test_domains_are_only_for_webservers(role):
    extra = {"schedule": "0 0 * * *", "command": "run"} if role == "cron" else {}
    result = infraspec.parse(
        yaml.safe_dump({"app": "web", "role": role, "domains": ["shop.example.com"], **extra}), FILE, "web"
    )
    error = only_error(result)
    assert (error.field, error.message) == ("domains", f"is only for webserver apps; this app's role is {role}")


def test_a_webserver_with_domains_and_no_port_may_have_a_healthcheck():
    result = parse_dict({"domains": ["shop.example.com"], "healthcheck": "/healthz"})
    assert result.ok, result.errors
    assert (result.spec.port, result.spec.healthcheck) == (None, "/healthz")
    assert parse_dict({"port": 8000, "domains": ["shop.example.com"], "healthcheck": "/healthz"}).ok


def test_a_healthcheck_needs_a_port_or_domains():
    error = only_error(parse_dict({"healthcheck": "/healthz"}))
    assert error.field == "healthcheck"
    assert error.message == "needs port or domains (the new version is probed on its $PORT); add one"


def test_domains_and_https_are_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "infraspec.md").read_text()
    assert "| `domains` |" in doc and "| `https` |" in doc
    # The documented example is valid.
    example = doc.split("## Domains and HTTPS", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    result = infraspec.parse(example, FILE, "shop")
    assert result.ok, [str(e) for e in result.errors]
    assert result.spec.domains
