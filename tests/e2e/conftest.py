"""Real parts for end-to-end tests: the upstream simulator over loopback, an SMTP server (aiosmtpd) and a
Celery worker process on the configured broker, all pointed at the test database."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
import threading
import time
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from tests.smtp import LoopbackSmtp

ROOT = Path(__file__).resolve().parents[2]


class Mailbox:
    """aiosmtpd handler keeping every message; ``refuse`` makes the server answer 451 (down for a while)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse = False
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return "451 try again later"
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if address in m["To"]]


@pytest.fixture
def smtp_server():
    mailbox = Mailbox()
    server = LoopbackSmtp(mailbox)
    mailbox.port = server.port
    server.start()
    yield mailbox
    server.stop()


@pytest.fixture
def simulator():
    from apps.simulator import SimulatorServer, generate_company

    company = generate_company(seed=42, scale=0.25)
    with SimulatorServer(company).start() as server:
        yield server


def _test_database_url() -> str:
    # The worker must use the test database pytest-django created, whatever DATABASE_URL names.
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.fixture
def celery_worker(transactional_db, smtp_server, tmp_path):
    celery_app.control.purge()
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_server.port}",
        "DJANGO_SETTINGS_MODULE": "config.settings.e2e",
        "SITE_URL": "http://fulcrum.test",
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-c",
                "2",
                "-l",
                "info",
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"e2e-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"celery worker did not start:\n{log.read_text()[-3000:]}")
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        print(log.read_text()[-5000:])


def wait_for(predicate, timeout: float = 120, interval: float = 0.5, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")


# ---- delivery fault tests (tests/e2e/test_delivery_faults.py) ----------------------------------------


class StoppableSmtp(LoopbackSmtp):
    """A server keeping every message in a ``Mailbox``; it can go down (connection refused) and come back."""

    def __init__(self) -> None:
        super().__init__(_TimedMailbox(self))
        self.mailbox = Mailbox()
        self.mailbox.port = self.port
        # When aiosmtpd accepted each message (time.time()), by Message-ID: the bench's "email accepted".
        self.accepted_at: dict[str, float] = {}


class _TimedMailbox:
    def __init__(self, smtp: StoppableSmtp) -> None:
        self.smtp = smtp

    async def handle_DATA(self, server, session, envelope):
        result = await self.smtp.mailbox.handle_DATA(server, session, envelope)
        if result.startswith("250"):
            with self.smtp.mailbox.lock:
                message = self.smtp.mailbox.messages[-1]
                self.smtp.accepted_at.setdefault(str(message["Message-ID"]), time.time())
        return result


@pytest.fixture
def stoppable_smtp():
    from apps.escalations import mail_return

    mail_return.forget()  # an earlier test's outage probe: this test's outage starts its own
    smtp = StoppableSmtp()
    smtp.start()
    yield smtp
    smtp.stop()


# Fast outbox retries for tests that break things on purpose; the outbox (not the HTTP client) retries.
FAST_DELIVERY_ENV = {
    "FULCRUM_ACTION_BACKOFF_BASE": "1",
    "FULCRUM_ACTION_BACKOFF_CAP": "2",
    "FULCRUM_HTTP_MAX_RETRIES": "0",
    "FULCRUM_HTTP_TIMEOUT": "6",
    "FULCRUM_DELIVERY_CLAIM_SECONDS": "10",
    "EMAIL_TIMEOUT": "5",
}


@pytest.fixture
def start_worker(transactional_db, stoppable_smtp, tmp_path):
    """Start Celery workers in their own process groups (so a test can SIGKILL one mid-task)."""
    import signal

    started: list[tuple[subprocess.Popen, Path]] = []

    def start(extra_env: dict[str, str] | None = None, concurrency: int = 2) -> subprocess.Popen:
        if not started:
            celery_app.control.purge()
        env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "EMAIL_URL": f"smtp://127.0.0.1:{stoppable_smtp.port}",
            "DJANGO_SETTINGS_MODULE": "config.settings.e2e",
            "SITE_URL": "http://fulcrum.test",
            **FAST_DELIVERY_ENV,
            **(extra_env or {}),
        }
        log = tmp_path / f"worker-{len(started)}.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-c",
                    str(concurrency),
                    "-l",
                    "info",
                    "--without-mingle",
                    "--without-gossip",
                    "-n",
                    f"e2e-{os.getpid()}-{len(started)}@%h",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append((worker, log))
        deadline = time.monotonic() + 60
        name = f"e2e-{os.getpid()}-{len(started) - 1}@"
        while not any(name in key for reply in celery_app.control.ping(timeout=0.5) for key in reply):
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"celery worker did not start:\n{log.read_text()[-3000:]}")
        return worker

    yield start
    for worker, log in started:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        print(f"--- {log.name}\n{log.read_text()[-4000:]}")
