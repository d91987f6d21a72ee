"""Fixtures shared by the escalation tests."""

from __future__ import annotations

import datetime as dt
import threading
from email.parser import BytesHeaderParser
from email.policy import default
from typing import Any

import pytest

from apps.escalations import mail_return
from tests.smtp import LoopbackSmtp


@pytest.fixture
def noise(settings):
    """Settings with every noise control off, in Chicago time; each test turns on what it exercises."""
    settings.TIME_ZONE = "America/Chicago"
    settings.FULCRUM = {
        **settings.FULCRUM,
        "EXECUTIVE_DIGEST": False,
        "DIGEST_PERIOD": dt.timedelta(hours=1),
        "QUIET_HOURS": "",
        "RECIPIENT_HOURLY_CAP": 0,
    }
    return settings


class Server(LoopbackSmtp):
    """aiosmtpd handler: each accepted message's Message-ID and the client port it came over (one port, one
    connection). ``answer`` maps a recipient to a refusal of its DATA; ``drop`` to a connection cut there."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, str, int]] = []
        self.contents: list[bytes] = []
        self.answer: dict[str, str] = {}
        self.drop: set[str] = set()
        self.lock = threading.Lock()
        super().__init__(self)  # its own handler

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        [to] = envelope.rcpt_tos
        if to in self.drop:
            self.drop.discard(to)
            server.transport.close()  # the client sees the connection go before any answer
            return "421 closing"
        if to in self.answer:
            return self.answer[to]
        headers = BytesHeaderParser(policy=default).parsebytes(envelope.content)
        mid = str(headers["Message-ID"])
        with self.lock:
            self.accepted.append((to, mid, session.peer[1]))
            self.contents.append(envelope.content)
        return "250 OK"

    def to(self, address: str) -> list[tuple[str, str, int]]:
        with self.lock:
            return [a for a in self.accepted if a[0] == address]


@pytest.fixture
def smtp(settings):
    server = Server()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 5
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    server.start()
    yield server
    server.stop()
    mail_return.forget()  # an outage's probe key, so the next test's outage starts its own
