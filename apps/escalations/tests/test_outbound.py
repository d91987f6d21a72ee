"""Outbound webhooks: Standard Webhooks signatures, the SSRF guard, and how each answer is classified."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from apps.escalations import outbound
from apps.escalations.delivery import delivery_attempt
from apps.escalations.models import Delivery
from apps.escalations.outbound import UnsafeDestination, check_destination, webhook_headers

from .helpers import make_escalation

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _independent_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_signature_matches_an_independent_hmac():
    body = b'{"type":"escalation.opened","data":{"id":1}}'
    headers = webhook_headers([SECRET], "msg_abc", body, timestamp=1_700_000_000)
    assert headers["webhook-id"] == "msg_abc" and headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == _independent_signature(SECRET, "msg_abc", "1700000000", body)
    # One byte of the body changed: the signature no longer verifies.
    assert headers["webhook-signature"] != _independent_signature(
        SECRET, "msg_abc", "1700000000", body + b" "
    )


def test_rotation_sends_one_signature_per_secret():
    other = "whsec_" + base64.b64encode(b"another-key-another-key-another!").decode()
    body = b"{}"
    signatures = webhook_headers([SECRET, other], "msg_1", body, timestamp=5)["webhook-signature"].split(" ")
    assert signatures == [
        _independent_signature(SECRET, "msg_1", "5", body),
        _independent_signature(other, "msg_1", "5", body),
    ]


# ---- the SSRF guard -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:8000/hook",
    ],
)
def test_private_and_special_addresses_are_refused(url, settings):
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_ALLOW_PRIVATE": False}
    with pytest.raises(UnsafeDestination, match="refused"):
        check_destination(url)


def test_a_hostname_resolving_to_loopback_is_refused(settings, monkeypatch):
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_ALLOW_PRIVATE": False}
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "hooks.partner.test":  # a public-looking name whose DNS answers 127.0.0.1
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(UnsafeDestination, match=r"127\.0\.0\.1 \(loopback\)"):
        check_destination("https://hooks.partner.test/fulcrum")


def test_public_addresses_and_the_allow_setting_pass(settings):
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_ALLOW_PRIVATE": False}
    check_destination("https://93.184.216.34/hook")
    check_destination("https://[2606:4700:4700::1111]/hook")
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_ALLOW_PRIVATE": True}
    check_destination("http://127.0.0.1:8000/hook")


@pytest.mark.parametrize("url", ["ftp://93.184.216.34/x", "file:///etc/passwd", "http:///nohost"])
def test_only_http_urls_with_a_host(url):
    with pytest.raises(UnsafeDestination):
        check_destination(url)


# ---- a real receiver over loopback ----------------------------------------------------------------------


class Receiver:
    """A tiny HTTP server: answers with the queued (status, headers) and records what it got."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, headers = receiver.answers.pop(0) if receiver.answers else (204, {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hook(receiver, settings):
    settings.FULCRUM = {
        **settings.FULCRUM,
        "OUTBOUND_ALLOW_PRIVATE": True,
        "OUTBOUND_WEBHOOKS": {"ops": {"url": f"{receiver.url}/hooks/fulcrum", "secret": SECRET}},
    }
    escalation = make_escalation()
    now = timezone.now()
    return Delivery.objects.create(
        escalation=escalation,
        action="webhook",
        target="ops",
        idempotency_key=f"esc{escalation.pk}:webhook:ops",
        next_attempt_at=now,
        created_at=now,
    )


def _retry_now(delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


@pytest.mark.django_db
def test_webhook_delivery_is_signed_and_stable_across_retries(hook, receiver):
    receiver.answers = [(503, {})]
    assert delivery_attempt(hook.pk) == "failed"
    _retry_now(hook)
    assert delivery_attempt(hook.pk) == "delivered"
    (path1, first, body1), (_, second, body2) = receiver.received
    assert path1 == "/hooks/fulcrum"
    assert first["webhook-id"] == second["webhook-id"]  # the receiver can drop the repeat
    for headers, body in ((first, body1), (second, body2)):
        expected = _independent_signature(SECRET, headers["webhook-id"], headers["webhook-timestamp"], body)
        assert headers["webhook-signature"] == expected
    payload = json.loads(body2)
    assert payload["type"] == "escalation.opened" and payload["data"]["id"] == hook.escalation_id
    hook.refresh_from_db()
    assert hook.state == "delivered" and hook.response["webhook_id"] == first["webhook-id"]


@pytest.mark.django_db
def test_429_waits_at_least_its_retry_after(hook, receiver):
    receiver.answers = [(429, {"Retry-After": "600"})]
    before = timezone.now()
    assert delivery_attempt(hook.pk) == "failed"
    hook.refresh_from_db()
    assert hook.next_attempt_at >= before + dt.timedelta(seconds=600)
    assert "HTTP 429" in hook.last_error


@pytest.mark.django_db
@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_a_4xx_is_dead_at_once_with_the_error(hook, receiver, status):
    receiver.answers = [(status, {})]
    assert delivery_attempt(hook.pk) == "dead"
    hook.refresh_from_db()
    assert hook.attempts == 1 and f"HTTP {status}" in hook.last_error


@pytest.mark.django_db
def test_redirects_are_not_followed(hook, receiver):
    receiver.answers = [(302, {"Location": "http://169.254.169.254/latest/meta-data/"})]
    assert delivery_attempt(hook.pk) == "dead"
    hook.refresh_from_db()
    assert "not followed" in hook.last_error
    assert len(receiver.received) == 1


@pytest.mark.django_db
def test_without_the_allow_setting_a_loopback_hook_is_dead_and_never_called(hook, receiver, settings):
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_ALLOW_PRIVATE": False}
    assert delivery_attempt(hook.pk) == "dead"
    hook.refresh_from_db()
    assert "loopback" in hook.last_error and receiver.received == []


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_connected_address_is_checked_too(receiver, settings, monkeypatch, scheme):
    """DNS rebinding: the name looked public when checked, but the socket reached loopback."""
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_ALLOW_PRIVATE": False}
    monkeypatch.setattr(outbound, "check_destination", lambda url: None)
    url = receiver.url.replace("http", scheme, 1)
    with pytest.raises(UnsafeDestination, match=r"connected to 127\.0\.0\.1"):
        outbound.guarded_post(f"{url}/x", body=b"{}", headers={}, timeout=5)
    assert receiver.received == []


@pytest.mark.django_db
def test_an_unconfigured_endpoint_is_dead(hook, settings):
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_WEBHOOKS": {}}
    assert delivery_attempt(hook.pk) == "dead"
    hook.refresh_from_db()
    assert "no outbound webhook named 'ops'" in hook.last_error


@pytest.mark.django_db
def test_a_timeout_is_retried(hook, receiver, settings, monkeypatch):
    settings.FULCRUM = {**settings.FULCRUM, "OUTBOUND_TIMEOUT": 0.5}
    listener = socket.socket()  # accepts connections, never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        settings.FULCRUM["OUTBOUND_WEBHOOKS"] = {
            "ops": {"url": f"http://127.0.0.1:{listener.getsockname()[1]}/", "secret": SECRET}
        }
        assert delivery_attempt(hook.pk) == "failed"
    finally:
        listener.close()
    hook.refresh_from_db()
    assert "timed out" in hook.last_error


@pytest.mark.django_db
def test_a_rule_with_webhook_and_escalate_pm_actions_queues_one_row_per_target(settings):
    from apps.escalations import actions

    def action_targets(escalation, name):
        return actions.get(name).targets([escalation])[0]

    settings.FULCRUM = {
        **settings.FULCRUM,
        "OUTBOUND_WEBHOOKS": {"ops": {"url": "https://hooks.example.com/a", "secret": SECRET}},
    }
    escalation = make_escalation()
    assert action_targets(escalation, "webhook") == ["ops"]
    project = escalation.project
    assert project.source.kind == "procore"
    assert action_targets(escalation, "escalate_pm") == [f"{project.source_id}:{project.external_id}"]
    escalation.project = None  # a client-level subject: no PM record to open an item on
    assert action_targets(escalation, "escalate_pm") == []
