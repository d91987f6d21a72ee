"""Content-Security-Policy, login rate limiting, and the production settings' deploy checks."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.dashboard import security
from apps.escalations.tests.test_pages import make_escalation

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTR = re.compile(r"<[^>]+\sstyle\s*=", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _fresh_limiter():
    # The limiter lives in the cache, which outlives a test's database transaction.
    cache.clear()
    yield
    cache.clear()


def post_login(client, username: str, password: str, address: str = "10.0.0.1", url: str = ""):
    return client.post(
        url or reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


# --- CSP ------------------------------------------------------------------------------------------


def test_every_page_carries_the_csp_without_inline_script_or_style(
    client, executive, account_manager, administrator
):
    escalation = make_escalation(client=None)
    pages = [(None, reverse("login"))]
    pages += [
        (executive, reverse("dashboard")),
        (executive, reverse("escalation-detail", args=[escalation.pk])),
    ]
    pages += [(account_manager, reverse("my-escalations")), (administrator, reverse("admin:index"))]
    for user, url in pages:
        if user is not None:
            client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        body = response.content.decode()
        assert not INLINE_SCRIPT.search(body), url
        assert not EVENT_HANDLER.search(body), url
        if not url.startswith("/admin/"):  # Django's own admin templates are not ours to police
            assert not STYLE_ATTR.search(body), url
        client.logout()


def test_only_swagger_ui_may_inline_styles_and_nothing_may_inline_script(client, administrator):
    client.force_login(administrator)
    docs = client.get("/api/docs/")["Content-Security-Policy"]
    assert "style-src 'self' 'unsafe-inline'" in docs and "script-src 'self';" in docs
    dashboard = client.get(reverse("dashboard"))["Content-Security-Policy"]
    assert "unsafe-inline" not in dashboard


def test_a_view_that_sets_its_own_policy_keeps_it():
    from django.http import HttpResponse

    def view(request):
        response = HttpResponse("x")
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    response = security.ContentSecurityPolicyMiddleware(view)(None)  # type: ignore[arg-type]
    assert response["Content-Security-Policy"] == "default-src 'none'"


# --- login rate limiting --------------------------------------------------------------------------


def test_five_wrong_passwords_lock_that_username_at_that_address(client, executive):
    for _ in range(security.LIMITS.per_user_and_address):
        assert post_login(client, executive.username, "wrong").status_code == 200
    # the right password is now refused too, without being checked, with a clear message and 429
    locked = post_login(client, executive.username, "pw")
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # the same person from another address, and another user from this one, are not locked
    assert post_login(client, executive.username, "pw", address="10.0.0.2").status_code == 302
    client.logout()


def test_other_usernames_at_the_locked_address_still_log_in(client, executive, ops_manager):
    for _ in range(security.LIMITS.per_user_and_address):
        post_login(client, executive.username, "wrong")
    assert post_login(client, ops_manager.username, "pw").status_code == 302


def test_lockout_is_audited(client, executive):
    for _ in range(security.LIMITS.per_user_and_address):
        post_login(client, executive.username, "wrong")
    post_login(client, executive.username, "pw")
    failed = AuditEntry.objects.filter(action="auth.login_failed", data__username=executive.username)
    # five wrong passwords and the refused attempt, each with the address; never a password
    assert failed.count() == security.LIMITS.per_user_and_address + 1
    assert {e.data.get("ip") for e in failed} == {"10.0.0.1"}
    [locked] = AuditEntry.objects.filter(action="auth.login_locked")
    assert locked.data["username"] == executive.username and locked.data["ip"] == "10.0.0.1"
    assert "pw" not in str(locked.data.values()) and "wrong" not in str([e.data for e in failed])


def test_a_correct_password_clears_the_failures(client, executive):
    for _ in range(security.LIMITS.per_user_and_address - 1):
        post_login(client, executive.username, "wrong")
    assert post_login(client, executive.username, "pw").status_code == 302
    client.logout()
    for _ in range(security.LIMITS.per_user_and_address - 1):
        post_login(client, executive.username, "wrong")
    assert post_login(client, executive.username, "pw").status_code == 302


def test_lockout_ends_after_the_window(client, executive, monkeypatch):
    import time as real_time

    for _ in range(security.LIMITS.per_user_and_address):
        post_login(client, executive.username, "wrong")
    assert post_login(client, executive.username, "pw").status_code == 429
    later = real_time.time() + security.LIMITS.window_s + 1
    monkeypatch.setattr(security.time, "time", lambda: later)
    assert post_login(client, executive.username, "pw").status_code == 302


def test_spraying_usernames_from_one_address_is_stopped(client, executive, monkeypatch):
    monkeypatch.setattr(security, "LIMITS", security.LoginLimits(per_user_and_address=5, per_address=8))
    for i in range(8):
        post_login(client, f"guess{i}", "wrong")
    assert post_login(client, executive.username, "pw").status_code == 429
    assert post_login(client, executive.username, "pw", address="10.9.9.9").status_code == 302


def test_admin_login_is_rate_limited_too(client, ops_manager):
    url = reverse("admin:login")
    for _ in range(security.LIMITS.per_user_and_address):
        post_login(client, ops_manager.username, "wrong", url=url)
    response = post_login(client, ops_manager.username, "pw", url=url)
    assert "Too many failed attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert post_login(client, ops_manager.username, "pw", address="10.0.0.7", url=url).status_code == 302


# --- production settings --------------------------------------------------------------------------


def _production_env() -> dict[str, str]:
    # Not the test process's settings module, nor the async escape hatch the browser tests switch on.
    dropped = {"DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        SECRET_KEY=secrets.token_urlsafe(64),
        FIELD_ENCRYPTION_KEY="prod-like-key",
        ALLOWED_HOSTS="fulcrum.example.com",
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://127.0.0.1/fulcrum"),
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        AUDIT_ANCHOR_KEY="prod-like-anchor-key",
    )
    return env


def test_production_settings_pass_the_deploy_checks():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=Path(settings.BASE_DIR),
        env={**_production_env(), "DJANGO_SETTINGS_MODULE": "config.settings.production"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_cookies_are_secure_httponly_and_same_site():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
        "s.CSRF_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, s.CSRF_COOKIE_SAMESITE, s.DEBUG, "
        "s.CACHES['default']['BACKEND'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=Path(settings.BASE_DIR),
        env={**_production_env(), "DJANGO_SETTINGS_MODULE": "config.settings.production"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "True",
        "True",
        "True",
        "True",
        "Lax",
        "Lax",
        "False",
        "django.core.cache.backends.redis.RedisCache",
    ]
