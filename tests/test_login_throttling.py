"""Login throttling (django-axes): wrong passwords lock a username out from an address."""

import logging
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.utils import timezone

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-password-1"
LOGIN_PAGES = ["/login/", "/admin/login/"]


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True, is_superuser=True)


def attempt(client, url, password, username="operator", **extra):
    return client.post(url, {"username": username, "password": password, "next": "/"}, **extra)


def logged_in(client):
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url", LOGIN_PAGES)
def test_sixty_wrong_passwords_then_the_right_one_is_refused(client, staff, url):
    for _ in range(60):
        response = attempt(client, url, "wrong-password")
        assert response.status_code in (200, 429)
    response = attempt(client, url, PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)
    page = response.content.decode()
    assert "Too many login attempts" in page
    assert "try again in 15 minutes" in page
    assert "Traceback" not in page


@pytest.mark.parametrize("url", LOGIN_PAGES)
def test_the_limit_is_five_failures(client, staff, url):
    for _ in range(4):
        assert attempt(client, url, "wrong-password").status_code == 200
    # The fifth failure locks the pair out at once.
    assert attempt(client, url, "wrong-password").status_code == 429
    assert attempt(client, url, PASSWORD).status_code == 429


def test_a_right_password_before_the_limit_clears_the_count(client, staff):
    for _ in range(4):
        attempt(client, "/login/", "wrong-password")
    response = attempt(client, "/login/", PASSWORD)
    assert response.status_code == 302 and logged_in(client)
    client.logout()
    for _ in range(4):
        assert attempt(client, "/login/", "wrong-password").status_code == 200


def test_the_lockout_ends_after_the_cool_off(client, staff):
    for _ in range(5):
        attempt(client, "/login/", "wrong-password")
    assert attempt(client, "/login/", PASSWORD).status_code == 429
    # As if the cool-off had passed: the last failure is older than it.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = attempt(client, "/login/", PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_lockout_is_per_username_and_address(client, staff, django_user_model):
    django_user_model.objects.create_user("other", password=PASSWORD)
    for _ in range(5):
        attempt(client, "/login/", "wrong-password")
    # Another user from the same address, and the same user from another.
    assert attempt(client, "/login/", PASSWORD, username="other").status_code == 302
    client.logout()
    assert attempt(client, "/login/", PASSWORD, REMOTE_ADDR="192.0.2.7").status_code == 302


def test_limit_and_cool_off_come_from_settings(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=90)
    attempt(client, "/login/", "wrong-password")
    response = attempt(client, "/login/", "wrong-password")
    assert response.status_code == 429
    assert "try again in 90 minutes" in response.content.decode()


def test_behind_a_proxy_the_forwarded_address_counts(client, staff, settings):
    settings.NORN_TRUSTED_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    for _ in range(5):
        # What the client put in the header is not believed: only the
        # entry the proxy appended (the rightmost) is its address.
        attempt(client, "/login/", "wrong-password", HTTP_X_FORWARDED_FOR="10.9.9.9, 198.51.100.1", **proxy)
    assert attempt(client, "/login/", PASSWORD, HTTP_X_FORWARDED_FOR="10.1.1.1, 198.51.100.1", **proxy).status_code == 429
    # Another client behind the same proxy is not locked out.
    response = attempt(client, "/login/", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.2", **proxy)
    assert response.status_code == 302


def test_without_trusted_proxies_forwarded_headers_are_ignored(client, staff):
    for n in range(5):
        attempt(client, "/login/", "wrong-password", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    assert attempt(client, "/login/", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99").status_code == 429


def test_a_lockout_logs_no_traceback(client, staff, caplog):
    with caplog.at_level(logging.INFO):
        for _ in range(7):
            attempt(client, "/login/", "wrong-password")
    assert not [r for r in caplog.records if r.exc_info]
    assert PASSWORD not in caplog.text and "wrong-password" not in caplog.text


def test_authenticate_without_a_request_still_works(staff):
    # The test client's login(), a shell or a management command: no
    # request, no address to throttle, and axes must not raise.
    from django.contrib.auth import authenticate

    assert authenticate(username="operator", password=PASSWORD) == staff
    assert authenticate(username="operator", password="wrong") is None


def test_a_forwarded_value_that_is_no_address_falls_back_to_the_connection(client, staff, settings):
    settings.NORN_TRUSTED_PROXY_COUNT = 1
    response = attempt(client, "/login/", "wrong-password", HTTP_X_FORWARDED_FOR="unknown")
    assert response.status_code == 200
    assert AccessAttempt.objects.get().ip_address == "127.0.0.1"
