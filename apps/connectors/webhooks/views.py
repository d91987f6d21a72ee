"""``POST /webhooks/<slug>/``: verify, store in the inbox, queue on commit, answer fast.

Order of checks: size (413, before the body is read past 1 MiB, chunked bodies included), connection (404),
signature and timestamp (401; the delivery is kept as ``rejected`` for forensics, at most ``REJECTED_CAP``
per connection and sender per ``REJECTED_WINDOW``), shape (400; QuickBooks keeps it the same way,
``signature_valid`` true). A valid delivery is inserted with ``ON CONFLICT DO NOTHING`` on (connection,
event id), one row per event where the vendor batches independent events (the kind's ``webhook_split``): a
redelivery answers ``{"status": "duplicate"}`` and changes nothing; new rows are queued once the insert has
committed and answered 202 ``{"status": "accepted", "id": <first new row>, "ids": [...]}``. No session, no
CSRF: the signature is the authentication.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import connection as db
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from apps.connectors.kinds import KINDS, ConnectorKind
from apps.connectors.models import Connection, WebhookDelivery

from . import schemes
from .tasks import enqueue

logger = logging.getLogger(__name__)

REJECTED_CAP = 100
REJECTED_WINDOW = dt.timedelta(minutes=10)
# Each web process keeps a connection's kind, options and decrypted secrets this long (a save in the same
# process forgets them at once): a rotated or revoked secret takes effect everywhere within this time.
CONNECTION_TTL = 5.0
_INSERT = f"""
    INSERT INTO {WebhookDelivery._meta.db_table}
        (connection_id, event_id, received_at, headers, body, signature_valid, status, status_changed_at,
         attempts, error, summary, remote_addr)
    SELECT %s, e.event_id, %s, %s::jsonb, e.body, true, 'received', %s, 0, '', '{{}}'::jsonb, %s::inet
    FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS e(event_id, body, n)
    ORDER BY e.n
    ON CONFLICT DO NOTHING
    RETURNING id
"""  # noqa: S608 - the table name comes from model metadata; values are bound parameters


@dataclass(frozen=True)
class Endpoint:
    """What the receiver needs of a connection."""

    pk: int
    slug: str
    kind: type[ConnectorKind]
    options: dict[str, Any]
    secrets: list[str]
    expires: float


_endpoints: dict[str, Endpoint] = {}


def _endpoint(slug: str) -> Endpoint | None:
    now = time.monotonic()
    cached = _endpoints.get(slug)
    if cached is not None and cached.expires > now:
        return cached
    connection = (
        Connection.objects.filter(
            slug=slug, enabled=True, kind__in=[name for name, cls in KINDS.items() if cls.receives_webhooks]
        )
        .only("id", "slug", "kind", "options", "webhook_secret_encrypted")
        .first()
    )
    if connection is None:
        _endpoints.pop(slug, None)
        return None
    endpoint = Endpoint(
        connection.pk,
        connection.slug,
        KINDS[connection.kind],
        dict(connection.options or {}),
        connection.webhook_secrets,
        now + CONNECTION_TTL,
    )
    _endpoints[slug] = endpoint
    return endpoint


@receiver([post_save, post_delete], sender=Connection, dispatch_uid="webhooks-forget-endpoints")
def forget_endpoints(**kwargs: Any) -> None:
    _endpoints.clear()


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _remote_addr(request: HttpRequest) -> str | None:
    value = request.META.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _uris(request: HttpRequest) -> tuple[str, ...]:
    """The full URIs the sender may have signed: as addressed (either scheme: a TLS proxy may hide it) and
    under SITE_URL."""
    path = request.get_full_path()
    uris = []
    try:
        host = request.get_host()
        other = "http" if request.is_secure() else "https"
        uris += [f"{request.scheme}://{host}{path}", f"{other}://{host}{path}"]
    except DisallowedHost:
        pass
    uris.append(settings.SITE_URL.rstrip("/") + path)
    return tuple(dict.fromkeys(uris))


def _store_rejected(
    endpoint: Endpoint,
    request: HttpRequest,
    headers: dict[str, str],
    body: bytes,
    reason: str,
    *,
    signature_valid: bool = False,
) -> None:
    """Keep a refused delivery for forensics, unless this sender already filled its allowance.

    ``signature_valid``: authentic but malformed (400) rather than not from the vendor (401)."""
    now = timezone.now()
    addr = _remote_addr(request)
    recent = WebhookDelivery.objects.filter(
        connection_id=endpoint.pk,
        status=WebhookDelivery.Status.REJECTED,
        received_at__gte=now - REJECTED_WINDOW,
        **({"remote_addr": addr} if addr else {"remote_addr__isnull": True}),
    )
    if recent[:REJECTED_CAP].count() >= REJECTED_CAP:
        return
    WebhookDelivery.objects.create(
        connection_id=endpoint.pk,
        event_id=endpoint.kind.webhook_event_id(headers, body),
        received_at=now,
        headers=schemes.redact(headers.items()),
        body=body,
        signature_valid=signature_valid,
        status=WebhookDelivery.Status.REJECTED,
        status_changed_at=now,
        error=reason,
        remote_addr=addr,
    )


def _read_body(request: HttpRequest) -> bytes:
    """The raw body, at most ``MAX_BODY + 1`` bytes (one more than allowed tells "too large").

    A sender may stream its body (``Transfer-Encoding: chunked``, no ``Content-Length``). The WSGI server
    (gunicorn) decodes the chunks and ends ``wsgi.input`` at the last one, but Django's request reads a body
    of unknown length as empty (it bounds the stream by ``CONTENT_LENGTH``, absent here), so such a body is
    read from ``wsgi.input`` itself, in pieces, never more than the cap.
    """
    chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not chunked or request.META.get("CONTENT_LENGTH"):
        return request.read(schemes.MAX_BODY + 1)
    stream = request.META.get("wsgi.input")
    if stream is None:
        return b""
    parts: list[bytes] = []
    size = 0
    while size <= schemes.MAX_BODY:
        part = stream.read(min(65536, schemes.MAX_BODY + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


@csrf_exempt
def receive(request: HttpRequest, slug: str) -> JsonResponse:
    if request.method != "POST":
        response = _error(405, "webhooks are delivered with POST")
        response["Allow"] = "POST"
        return response
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(400, "Content-Length is not a number")
    if declared > schemes.MAX_BODY:
        return _error(413, f"body larger than {schemes.MAX_BODY} bytes")
    body = _read_body(request)
    if len(body) > schemes.MAX_BODY:
        return _error(413, f"body larger than {schemes.MAX_BODY} bytes")

    endpoint = _endpoint(slug)
    if endpoint is None:
        return _error(404, f"no webhook endpoint {slug!r}")

    headers = {name.lower(): value for name, value in request.headers.items()}
    inbound = schemes.Inbound(
        method=request.method,
        uris=_uris(request) if endpoint.kind.signs_uri else (),
        headers=headers,
        body=body,
        now=time.time(),
    )
    try:
        endpoint.kind.webhook_verify(inbound, endpoint.secrets)
    except schemes.Rejected as exc:
        _store_rejected(endpoint, request, headers, body, str(exc))
        return _error(401, str(exc))

    try:
        payload = schemes.decode(body)
        endpoint.kind.webhook_events(payload, endpoint.options, headers)
        parts = dict(endpoint.kind.webhook_split(headers, body, payload))  # one body per event id
    except schemes.Malformed as exc:
        if endpoint.kind.keeps_malformed:
            _store_rejected(endpoint, request, headers, body, f"malformed: {exc}", signature_valid=True)
        return _error(400, str(exc))

    now = timezone.now()
    stored = json.dumps(schemes.redact(headers.items()))
    # One statement, committed on its own (or with the request's transaction under ATOMIC_REQUESTS); the
    # tasks are queued once the rows are committed, so a worker always finds them.
    with db.cursor() as cursor:
        cursor.execute(
            _INSERT,
            [endpoint.pk, now, stored, now, _remote_addr(request), list(parts), list(parts.values())],
        )
        ids = sorted(pk for (pk,) in cursor.fetchall())
    if not ids:
        return JsonResponse({"status": "duplicate"}, status=200)
    for pk in ids:
        transaction.on_commit(partial(enqueue, pk))
    return JsonResponse({"status": "accepted", "id": ids[0], "ids": ids}, status=202)
