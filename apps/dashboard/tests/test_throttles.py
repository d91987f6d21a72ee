"""Issue 19: the password reset form is throttled and audited; every lockout answers 429."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.cache import cache

from apps.audit.models import AuditEntry
from apps.dashboard.security import RESET_LIMITS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def _reset(client, email: str, address: str = "10.0.0.9"):
    return client.post("/accounts/password_reset/", {"email": email}, REMOTE_ADDR=address)


def test_reset_requests_are_capped_per_address(client, executive):
    answers = [_reset(client, f"nobody{i}@example.test").status_code for i in range(10)]
    assert answers == [302] * RESET_LIMITS.per_address + [429] * (10 - RESET_LIMITS.per_address)
    assert _reset(client, executive.email, address="10.0.0.10").status_code == 302  # another address


def test_reset_emails_are_capped_per_email_address(client, executive):
    answers = [_reset(client, executive.email, address=f"10.0.1.{i}").status_code for i in range(10)]
    assert answers.count(302) == RESET_LIMITS.per_email and answers[-1] == 429
    assert len(mail.outbox) == RESET_LIMITS.per_email  # 10 requests, 3 emails (was 10)
    refused = _reset(client, executive.email, address="10.0.2.1")
    assert refused.status_code == 429 and "Too many password reset requests" in refused.content.decode()
    assert refused["Retry-After"] == str(RESET_LIMITS.window_s)


def test_reset_requests_are_audited(client, executive):
    for _ in range(RESET_LIMITS.per_email + 1):
        _reset(client, executive.email.upper())
    actions = list(
        AuditEntry.objects.filter(action__startswith="auth.password_reset").values_list("action", "data")
    )
    assert [a for a, _ in actions] == ["auth.password_reset_requested"] * 3 + [
        "auth.password_reset_throttled"
    ]
    assert all(d["email"] == executive.email.lower() and d["ip"] == "10.0.0.9" for _, d in actions)


def test_the_admin_lockout_answers_429(client, ops_manager):
    for _ in range(5):
        response = client.post(
            "/admin/login/", {"username": ops_manager.username, "password": "wrong"}, REMOTE_ADDR="10.0.0.3"
        )
    locked = client.post(
        "/admin/login/", {"username": ops_manager.username, "password": "pw"}, REMOTE_ADDR="10.0.0.3"
    )
    assert response.status_code == 200  # the fifth failure locks, and says "wrong password"
    assert locked.status_code == 429 and "Too many failed attempts" in locked.content.decode()
    wrong_once = client.post(
        "/admin/login/", {"username": ops_manager.username, "password": "wrong"}, REMOTE_ADDR="10.0.0.4"
    )
    assert wrong_once.status_code == 200  # a plain wrong password is not a lockout
