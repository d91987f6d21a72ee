"""Calls that leave Fulcrum for a URL: outbound webhooks (Standard Webhooks) and Procore write-backs.

Outbound webhooks are signed per Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with the key from a ``whsec_`` secret.

The SSRF guard refuses private, loopback, link-local, multicast, reserved and unspecified addresses, IPv4
and IPv6 (mapped IPv4 included), unless ``FULCRUM["OUTBOUND_ALLOW_PRIVATE"]`` is true. It checks twice:
the resolved addresses before the call (a clear error), and the peer address of the socket actually
connected (a DNS answer that changes between the two — rebinding — cannot slip through). Redirects are
never followed: a 3xx from a public host could point anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from apps.errors import Permanent, Transient

from .models import Escalation

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeDestination(Permanent):
    """The URL resolves to an address Fulcrum must not call (or is not an http(s) URL)."""


# ---- SSRF guard ------------------------------------------------------------------------------------


def allow_private() -> bool:
    return bool(settings.FULCRUM.get("OUTBOUND_ALLOW_PRIVATE", False))


def address_refused(ip: IPAddress) -> str:
    """Why Fulcrum refuses to call this address ("" when it may)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refused(ip.ipv4_mapped)
    for flag in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{flag}"):
            return flag.replace("_", "-")
    if not ip.is_global:  # shared address space (100.64/10), 6to4/Teredo relays and the like
        return "not globally routable"
    return ""


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeDestination(f"cannot resolve {host!r}: {exc}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_destination(url: str) -> None:
    """Raise UnsafeDestination unless ``url`` is http(s) and every address of its host may be called."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeDestination(f"not an http(s) URL: {url!r}")
    if allow_private():
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for ip in resolve(parts.hostname, port):
        reason = address_refused(ip)
        if reason:
            raise UnsafeDestination(f"{parts.hostname} resolves to {ip} ({reason}); refused")


def _check_peer(sock: socket.socket) -> None:
    if allow_private():
        return
    ip = ipaddress.ip_address(str(sock.getpeername()[0]).split("%", 1)[0])
    reason = address_refused(ip)
    if reason:
        sock.close()
        raise UnsafeDestination(f"connected to {ip} ({reason}); refused")


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _check_peer(sock)
        return sock


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _check_peer(sock)
        return sock


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def guarded_session() -> requests.Session:
    """A session whose every connection is checked by peer address, with no proxies from the environment."""
    session = requests.Session()
    session.trust_env = False  # a proxy would make the peer check see the proxy, not the destination
    session.mount("http://", _GuardedAdapter())
    session.mount("https://", _GuardedAdapter())
    return session


def guarded_post(url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> requests.Response:
    """POST through the SSRF guard without following redirects. A timeout, connection error, 5xx or 429 is
    ``Transient`` (with the answer's Retry-After), any other answer ``Permanent``."""
    from apps.connectors.http import RETRY_STATUSES, retry_after_seconds

    check_destination(url)
    session = guarded_session()
    try:
        response = session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.Timeout as exc:
        raise Transient(f"timed out after {timeout:.0f}s") from exc
    except requests.ConnectionError as exc:
        if isinstance(exc.__context__, UnsafeDestination) or "refused;" in str(exc):
            raise UnsafeDestination(str(exc)) from exc
        raise Transient(f"connection failed: {exc}") from exc
    finally:
        session.close()
    status = response.status_code
    if 200 <= status < 300:
        return response
    excerpt = " ".join(response.text[:300].split())
    message = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if 300 <= status < 400:
        message += f" (redirect to {response.headers.get('Location', '?')!r} not followed)"
    if status in RETRY_STATUSES or status >= 500:
        raise Transient(message, retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    raise Permanent(message)


# ---- Standard Webhooks ------------------------------------------------------------------------------


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64); any other string is used as is."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(
    secrets: list[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Headers of one signed delivery; several secrets give several signatures (rotation)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": " ".join(webhook_signature(s, msg_id, stamp, body) for s in secrets),
        "user-agent": "Fulcrum-Webhooks/1.0",
    }


@dataclass(frozen=True)
class WebhookEndpoint:
    name: str
    url: str
    secrets: list[str]


def webhook_endpoints() -> dict[str, WebhookEndpoint]:
    """``FULCRUM["OUTBOUND_WEBHOOKS"]``: ``{name: {"url": ..., "secret": ... | "secrets": [...]}}``."""
    configured: dict[str, Any] = settings.FULCRUM.get("OUTBOUND_WEBHOOKS") or {}
    endpoints = {}
    for name, conf in configured.items():
        secrets = list(conf.get("secrets") or [conf["secret"]])
        endpoints[name] = WebhookEndpoint(name=name, url=str(conf["url"]), secrets=secrets)
    return endpoints


def webhook_payload(escalation: Escalation, event: str) -> dict[str, Any]:
    return {
        "type": event,
        "timestamp": escalation.last_fired_at.isoformat(),
        "data": {
            "id": escalation.pk,
            "rule": escalation.rule.key,
            "rule_version": escalation.evidence.get("rule_version"),
            "subject_type": escalation.subject_type,
            "subject_id": escalation.subject_id,
            "subject": escalation.subject_label,
            "client": escalation.client.name if escalation.client else None,
            "project": escalation.project.number if escalation.project else None,
            "route": escalation.route,
            "severity": escalation.severity,
            "status": escalation.status,
            "summary": escalation.summary,
            "fire_count": escalation.fire_count,
            "url": f"{settings.SITE_URL}/escalations/{escalation.pk}/",
        },
    }


def webhook_send(*, escalation: Escalation, endpoint_name: str, idempotency_key: str) -> dict[str, Any]:
    """POST the escalation to one configured endpoint. The webhook-id is stable across retries, so the
    receiver can drop repeats (Standard Webhooks' idempotency)."""
    endpoints = webhook_endpoints()
    if endpoint_name not in endpoints:
        raise UnsafeDestination(
            f"no outbound webhook named {endpoint_name!r} in FULCRUM['OUTBOUND_WEBHOOKS']"
        )
    endpoint = endpoints[endpoint_name]
    msg_id = "msg_" + uuid.uuid5(uuid.NAMESPACE_URL, f"fulcrum:{idempotency_key}").hex
    body = json.dumps(webhook_payload(escalation, "escalation.opened"), separators=(",", ":")).encode()
    response = guarded_post(
        endpoint.url,
        body=body,
        headers=webhook_headers(endpoint.secrets, msg_id, body),
        timeout=float(settings.FULCRUM.get("OUTBOUND_TIMEOUT", 15.0)),
    )
    return {"webhook_id": msg_id, "status": response.status_code}


def webhook_targets() -> list[str]:
    """Targets of the ``webhook`` action: every configured endpoint, by name."""
    return sorted(webhook_endpoints())


# ---- Procore write-backs ----------------------------------------------------------------------------


def pm_targets(escalation: Escalation) -> list[str]:
    """Targets of ``escalate_pm``: ``<connection id>:<procore project id>`` of the escalation's project."""
    project = escalation.project
    if project is None or project.source.kind != "procore":
        return []
    return [f"{project.source_id}:{project.external_id}"]


def _procore(connection_id: int) -> Any:
    from apps.connectors.kinds import get_kind
    from apps.connectors.models import Connection

    # A configured connection's base_url is trusted (an administrator set it); nothing else reaches here.
    return get_kind(Connection.objects.get(pk=connection_id))


def procore_create_rfi(
    *, escalation: Escalation, target: str, idempotency_key: str, text: str
) -> dict[str, Any]:
    """An RFI on the project in Procore (``escalate_pm``) carrying the key, so a retry creates none."""
    connection_id, _, project_id = target.partition(":")
    kind = _procore(int(connection_id))
    client = kind.client()
    body = {
        "rfi": {
            "subject": f"Fulcrum escalation #{escalation.pk}: {escalation.rule.name}"[:255],
            "question": {"body": text},
            "reference": idempotency_key,
        }
    }
    try:
        answer = client.post_json(
            f"/rest/v1.0/projects/{project_id}/rfis", body, headers={"Idempotency-Key": idempotency_key}
        )
    finally:
        client.close()
    return {"rfi_id": str((answer or {}).get("id", "")), "number": str((answer or {}).get("number", ""))}


def change_order_target(escalation: Escalation) -> str | None:
    """``<connection id>:<procore project id>:<change order id>`` for a change-order escalation."""
    from apps.entities.models import ChangeOrder

    if escalation.subject_type != "change_order":
        return None
    co = ChangeOrder.objects.select_related("source").filter(pk=escalation.subject_id).first()
    if co is None or co.source.kind != "procore":
        return None
    return f"{co.source_id}:{co.project_ref}:{co.external_id}"


def procore_set_change_order_status(*, target: str, status: str, idempotency_key: str) -> dict[str, Any]:
    """PATCH the change order package's status (an executive's decision written back)."""
    connection_id, project_id, co_id = target.split(":", 2)
    kind = _procore(int(connection_id))
    client = kind.client()
    try:
        data, _ = client.request_json(
            "PATCH",
            f"/rest/v1.0/change_order_packages/{co_id}",
            params={"project_id": project_id},
            json={"change_order_package": {"status": status}},
            headers={"Idempotency-Key": idempotency_key},
        )
    finally:
        client.close()
    return {"change_order": co_id, "status": str((data or {}).get("status", status))}
