"""OAuth2 access-token refresh (QuickBooks Online, Procore): once per expiry, however many workers notice.

Both vendors rotate the refresh token on use (Procore's work once), so two workers refreshing with the same
token would leave one holding a dead grant. The refresh therefore runs under a row lock on the connection and
re-reads the credentials after acquiring it: a worker that finds a token newer than the one it saw rejected
uses that instead of refreshing again. The new tokens are stored, encrypted, in the same transaction.
Tokens never reach logs, errors or the audit trail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record

from .http import UpstreamPermanent, UpstreamTransient
from .kinds.base import ConfigurationError, parse_datetime
from .models import Connection

# Refresh this long before the stated expiry: a token must not die between our check and the vendor's.
REFRESH_MARGIN = dt.timedelta(seconds=60)


def expiring(credentials: dict[str, Any], now: dt.datetime | None = None) -> bool:
    """Whether the access token is missing or expires within the margin (no ``expires_at``: not known to)."""
    if not credentials.get("access_token"):
        return True
    expires_at = credentials.get("expires_at")
    if not expires_at:
        return False
    return parse_datetime(expires_at) - REFRESH_MARGIN <= (now or timezone.now())


def _request_tokens(token_url: str, credentials: dict[str, Any], basic_auth: bool) -> dict[str, Any]:
    form = {"grant_type": "refresh_token", "refresh_token": credentials["refresh_token"]}
    client = (credentials.get("client_id", ""), credentials.get("client_secret", ""))
    auth = client if basic_auth else None
    if not basic_auth:
        form.update(client_id=client[0], client_secret=client[1])
    timeout = float(settings.FULCRUM["HTTP_TIMEOUT"])
    try:
        response = requests.post(
            token_url, data=form, auth=auth, timeout=timeout, headers={"Accept": "application/json"}
        )
    except requests.RequestException as exc:
        raise UpstreamTransient(f"POST {token_url}: {type(exc).__name__}", url=token_url) from None
    if response.status_code in (400, 401):
        # The body names the OAuth error only ("invalid_grant"); it is still left out in case a vendor echoes.
        raise ConfigurationError(
            f"token refresh refused (HTTP {response.status_code}): the connection must be re-authorised"
        )
    status = response.status_code
    if status >= 300:
        kind = UpstreamTransient if status >= 500 or status == 429 else UpstreamPermanent
        raise kind(f"POST {token_url}: HTTP {status}", status=status, url=token_url)
    try:
        answer = response.json()
        str(answer["access_token"])
    except (ValueError, KeyError, TypeError):
        raise UpstreamPermanent(f"POST {token_url}: no access_token in the answer", url=token_url) from None
    return answer


def oauth_refresh(
    *, connection: Connection, token_url: str, rejected_token: str | None, basic_auth: bool
) -> str:
    """A usable access token for ``connection``, refreshing (and storing the rotated tokens) if needed.

    ``rejected_token`` is the token the upstream just refused (None when refreshing ahead of expiry). The
    caller's ``connection`` is updated in place with the stored credentials.
    """
    with transaction.atomic():
        locked = Connection.objects.select_for_update().get(pk=connection.pk)
        credentials = locked.credentials
        current = credentials.get("access_token", "")
        if current and current != rejected_token and not expiring(credentials):
            # Another worker refreshed while we waited for the lock.
            connection.credentials_encrypted = locked.credentials_encrypted
            return str(current)
        if not credentials.get("refresh_token"):
            raise ConfigurationError(
                f"connection {connection.slug!r} has no refresh_token to renew its access"
            )
        answer = _request_tokens(token_url, credentials, basic_auth)
        now = timezone.now()
        credentials["access_token"] = str(answer["access_token"])
        if answer.get("refresh_token"):
            credentials["refresh_token"] = str(answer["refresh_token"])
        if answer.get("expires_in") is not None:
            expires_at = now + dt.timedelta(seconds=float(answer["expires_in"]))
            credentials["expires_at"] = expires_at.isoformat()
        else:
            credentials.pop("expires_at", None)
        locked.credentials = credentials
        locked.save(update_fields=["credentials_encrypted", "updated_at"])
        audit_record(
            action="connection.token_refreshed",
            actor="system:oauth",
            object_type="connection",
            object_id=connection.slug,
            data={"expires_at": credentials.get("expires_at"), "rotated": bool(answer.get("refresh_token"))},
        )
        connection.credentials_encrypted = locked.credentials_encrypted
        return credentials["access_token"]
