"""infraspec `notify:`: the targets an app names, validated with the field,
the line and what would be valid (docs/infraspec.md, docs/notifications.md)."""

from apps_registry import infraspec
from apps_registry.spec import DEFAULT_NOTIFY_ON, NotifyRule, Spec

BASE = "app: shop\nrole: worker\n"


def errors(text):
    return [str(e) for e in infraspec.parse(BASE + text, "infraspec.yaml").errors]


def test_targets_with_and_without_events_are_normalized():
    result = infraspec.parse(BASE + (
        "notify:\n"
        "  - target: ops-slack\n"
        "    events: [failed, rolled_back, cancelled, failed]\n"
        "  - team-mail\n"
    ), "infraspec.yaml")
    assert result.errors == []
    assert result.data["notify"] == [
        {"target": "ops-slack", "events": ["failed", "rolled_back", "cancelled"]},
        {"target": "team-mail", "events": list(DEFAULT_NOTIFY_ON)},
    ]
    assert result.spec.notify == (
        NotifyRule("ops-slack", ("failed", "rolled_back", "cancelled")),
        NotifyRule("team-mail", DEFAULT_NOTIFY_ON),
    )
    # What App.spec stores reads back the same.
    assert Spec.from_dict(result.data).notify == result.spec.notify


def test_a_spec_without_notify_stores_no_notify_key():
    result = infraspec.parse(BASE, "infraspec.yaml")
    assert "notify" not in result.data
    assert result.spec.notify == ()
    assert Spec.from_dict({"app": "shop", "role": "worker"}).notify == ()


def test_bad_target_names_say_what_a_name_may_be():
    assert errors("notify:\n  - target: Ops_Slack\n") == [
        "infraspec.yaml:4: notify[0].target: 'Ops_Slack' is not a target name; use 1 to 40 lower-case "
        "letters, digits and '-', starting with a letter (e.g. ops-slack)"
    ]
    assert errors("notify:\n  - target: 5\n")[0].endswith("5 is not a target name; use 1 to 40 lower-case "
                                                          "letters, digits and '-', starting with a letter (e.g. ops-slack)")
    assert "is not a target name" in errors("notify:\n  - target: " + "a" * 41 + "\n")[0]


def test_unknown_events_name_the_valid_ones():
    assert errors("notify:\n  - target: ops\n    events: [failed, exploded]\n") == [
        "infraspec.yaml:5: notify[0].events[1]: 'exploded' is not an event; "
        "use one of deployed, failed, rolled_back, restored, cancelled"
    ]
    assert errors("notify:\n  - target: ops\n    events: failed\n") == [
        "infraspec.yaml:5: notify[0].events: 'failed' is not a list of events; "
        "give some of deployed, failed, rolled_back, restored, cancelled"
    ]
    assert "[] is not a list of events" in errors("notify:\n  - target: ops\n    events: []\n")[0]


def test_a_bare_on_key_is_explained():
    # YAML 1.1 reads `on` as true; the message says where the events go.
    assert errors("notify:\n  - target: ops\n    on: [failed]\n") == [
        "infraspec.yaml:5: notify[0].on: is not a key here; list the events under events"
    ]


def test_duplicates_missing_targets_and_unknown_keys():
    found = errors(
        "notify:\n"
        "  - target: ops\n"
        "  - target: ops\n"
        "  - events: [failed]\n"
        "  - {target: mail, url: 'https://example.com/hook'}\n"
        "  - 7\n"
    )
    assert found == [
        "infraspec.yaml:5: notify[1].target: 'ops' is listed twice (also notify[0]); "
        "keep one and list all its events there",
        "infraspec.yaml:6: notify[2].target: is required: the name of a target configured in Norn's environment",
        "infraspec.yaml:7: notify[3].url: unknown key 'url'; valid keys here are target, events",
        "infraspec.yaml:8: notify[4]: 7 is not a mapping; give {target: NAME, events: [EVENT, ...]}",
    ]


def test_notify_must_be_a_short_list():
    assert errors("notify: ops\n") == ["infraspec.yaml:3: notify: 'ops' is not a list"]
    assert errors("notify: []\n") == [
        "infraspec.yaml:3: notify: has 0 targets; list from 1 to 10, or leave notify out"
    ]
    many = "".join(f"  - t{i}\n" for i in range(11))
    assert errors("notify:\n" + many) == [
        "infraspec.yaml:3: notify: has 11 targets; list from 1 to 10, or leave notify out"
    ]
