"""Browser-facing hardening: the Content-Security-Policy header and login rate limiting.

The CSP allows only this origin's scripts, styles, images and fonts; pages carry no inline script or
style, so an HTML injection that slipped past autoescaping still cannot run. The login limiter counts
failures per (username, client address) and per client address in Django's cache and refuses further
attempts for a lockout window; refused attempts go through ``user_login_failed`` like wrong passwords,
so the audit chain records them with the existing signal handler.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import user_login_failed
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import LoginView, PasswordResetView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

from apps.audit.services import audit_record

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # data: for the small inline icons some bundled UIs (admin, Swagger UI) use in CSS.
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


# Swagger UI (served from drf-spectacular-sidecar's static files) injects <style> elements at run time.
# Inline *style* only, on that one page, which renders no synced data: scripts stay 'self' everywhere.
INLINE_STYLE_PATHS = ("/api/docs/",)
CONTENT_SECURITY_POLICY_INLINE_STYLE = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)


class ContentSecurityPolicyMiddleware:
    """Set the CSP on every response that does not already carry one (a view may set a stricter one)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            relaxed = request.path.startswith(INLINE_STYLE_PATHS)
            response["Content-Security-Policy"] = (
                CONTENT_SECURITY_POLICY_INLINE_STYLE if relaxed else CONTENT_SECURITY_POLICY
            )
        return response


# --- login rate limiting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginLimits:
    """Failures allowed within ``window_s`` before attempts are refused for ``window_s``."""

    per_user_and_address: int = 5
    # Higher: an office behind one NAT address shares it; this only stops spraying many usernames.
    per_address: int = 50
    window_s: int = 15 * 60


LIMITS = LoginLimits()


def client_address(request: HttpRequest | None) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client wants it to be unless a trusted proxy
    # rewrites it, and trusting it would let an attacker pick a fresh address per attempt.
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def _keys(username: str, address: str) -> tuple[str, str]:
    # Hashed so a username with spaces or odd characters is a valid cache key (memcached rules).
    pair = hashlib.sha256(f"{username.strip().lower()}\0{address}".encode()).hexdigest()
    return f"fulcrum:login:pair:{pair}", f"fulcrum:login:addr:{hashlib.sha256(address.encode()).hexdigest()}"


def _retry_after(key: str) -> int | None:
    """Seconds until ``key``'s lockout ends, or None when it is not locked."""
    state = cache.get(key)
    if not isinstance(state, dict) or "locked_until" not in state:
        return None
    remaining = state["locked_until"] - time.time()
    return math.ceil(remaining) if remaining > 0 else None


def login_lockout(*, username: str, address: str) -> int | None:
    """Seconds the caller must wait before another login attempt, or None if attempts are allowed."""
    pair, addr = _keys(username, address)
    waits = [w for w in (_retry_after(pair), _retry_after(addr)) if w]
    return max(waits) if waits else None


def _count(key: str, limit: int) -> bool:
    """Count one failure on ``key``; True when this failure reached the limit and locked it."""
    now = time.time()
    state = cache.get(key)
    if not isinstance(state, dict) or state.get("window_ends", 0) <= now:
        state = {"failures": 0, "window_ends": now + LIMITS.window_s}
    state["failures"] += 1
    locked = state["failures"] >= limit and "locked_until" not in state
    if state["failures"] >= limit:
        state.setdefault("locked_until", now + LIMITS.window_s)
    # Not atomic across processes: two racing failures may count once; the limit is a brake, not a ledger.
    cache.set(key, state, timeout=LIMITS.window_s * 2)
    return locked


def login_failure_record(*, username: str, address: str) -> bool:
    """Count a failed login; True when it locked this username at this address (or the address)."""
    pair, addr = _keys(username, address)
    locked_pair = _count(pair, LIMITS.per_user_and_address)
    locked_addr = _count(addr, LIMITS.per_address)
    if locked_pair or locked_addr:
        audit_record(
            action="auth.login_locked",
            actor=AnonymousUser(),
            object_type="user",
            object_id="",
            data={
                "username": username[:150],
                "ip": address,
                "scope": "address" if locked_addr and not locked_pair else "username_and_address",
                "minutes": LIMITS.window_s // 60,
            },
        )
    return locked_pair or locked_addr


def login_success_record(*, username: str, address: str) -> None:
    """A correct password clears that username's failures at this address (not the address's)."""
    cache.delete(_keys(username, address)[0])


class RateLimitedLoginMixin:
    """For an ``AuthenticationForm``: refuse while locked out, count failures, clear on success."""

    error_messages: dict[str, Any]
    request: HttpRequest | None
    data: Any

    def clean(self) -> dict[str, Any]:
        username = str(self.data.get("username") or "")
        address = client_address(self.request)
        wait = login_lockout(username=username, address=address)
        if wait is not None:
            # Recorded like a wrong password (the audit handler listens), but the password is not checked.
            user_login_failed.send(sender=__name__, credentials={"username": username}, request=self.request)
            raise forms.ValidationError(
                "Too many failed attempts. Try again in %(minutes)d minute(s).",
                code="locked_out",
                params={"minutes": max(1, math.ceil(wait / 60))},
            )
        try:
            data: dict[str, Any] = super().clean()  # type: ignore[misc]
        except forms.ValidationError as exc:
            if getattr(exc, "code", None) == "invalid_login":
                login_failure_record(username=username, address=address)
            raise
        login_success_record(username=username, address=address)
        return data


class RateLimitedAuthenticationForm(RateLimitedLoginMixin, AuthenticationForm):
    pass


class RateLimitedAdminAuthenticationForm(RateLimitedLoginMixin, AdminAuthenticationForm):
    pass


class RateLimitedLoginView(LoginView):
    """The site login page with the limiter; a locked-out attempt answers 429 so scripts notice."""

    authentication_form = RateLimitedAuthenticationForm

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        return lockout_to_429(super().form_invalid(form))


def lockout_to_429(response: HttpResponse) -> HttpResponse:
    """A login page refused for a lockout answers 429, whichever login view rendered it (site or admin)."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is not None and any(e.code == "locked_out" for e in form.non_field_errors().as_data()):
        response.status_code = 429
    return response


def admin_login_limited(login: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wraps ``admin.site.login`` so its lockout answers 429 like the site's login page."""

    def view(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return lockout_to_429(login(request, extra_context))

    return view


# --- password reset throttling ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetLimits:
    """Reset requests allowed per ``window_s``: per address, and per email address asked about."""

    per_address: int = 5
    per_email: int = 3
    window_s: int = 60 * 60


RESET_LIMITS = ResetLimits()


def _hit(key: str, limit: int, window_s: int) -> bool:
    """Count one request on ``key``; True while within ``limit`` for the window."""
    now = time.time()
    state = cache.get(key)
    if not isinstance(state, dict) or state.get("window_ends", 0) <= now:
        state = {"count": 0, "window_ends": now + window_s}
    state["count"] += 1
    cache.set(key, state, timeout=window_s * 2)
    return bool(state["count"] <= limit)


def password_reset_request(*, email: str, address: str) -> bool:
    """Count and audit one reset request; False when it is over a limit (and nothing is sent)."""
    normalised = email.strip().lower()
    by_address = _hit(
        f"fulcrum:reset:addr:{hashlib.sha256(address.encode()).hexdigest()}",
        RESET_LIMITS.per_address,
        RESET_LIMITS.window_s,
    )
    by_email = _hit(
        f"fulcrum:reset:email:{hashlib.sha256(normalised.encode()).hexdigest()}",
        RESET_LIMITS.per_email,
        RESET_LIMITS.window_s,
    )
    allowed = by_address and by_email
    audit_record(
        action="auth.password_reset_requested" if allowed else "auth.password_reset_throttled",
        actor=AnonymousUser(),
        object_type="user",
        object_id="",
        data={"email": normalised[:254], "ip": address},
    )
    return allowed


class RateLimitedPasswordResetView(PasswordResetView):
    """Django's reset form with a limit per address and per email; every request is audited."""

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        email = str(form.cleaned_data.get("email") or "")
        if not password_reset_request(email=email, address=client_address(self.request)):
            # On the field: the admin's reset template shows field errors only.
            form.add_error("email", "Too many password reset requests. Try again later.")
            response = self.form_invalid(form)
            response.status_code = 429
            response["Retry-After"] = str(RESET_LIMITS.window_s)
            return response
        return super().form_valid(form)
