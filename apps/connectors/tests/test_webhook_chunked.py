"""Chunked webhook bodies (``Transfer-Encoding: chunked``, no ``Content-Length``) through a real gunicorn.

Django's test client and its live server both bound the body by ``Content-Length``, so they cannot deliver a
chunked body at all; production's gunicorn decodes the chunks and hands the application a stream that ends
with the last one. The test starts gunicorn on the test database and sends with ``http.client``, chunk by
chunk, as a vendor streaming its delivery would: the whole body is stored (its signature covers every
byte), and a chunked body past 1 MiB is refused with 413 without being read further.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection as db

from apps.connectors.models import WebhookDelivery
from apps.connectors.services import connection_import
from apps.connectors.webhooks import schemes
from apps.simulator.webhooks import new_standard_secret, standard_delivery
from config.embedded_servers import free_port

ROOT = Path(__file__).resolve().parents[3]
SECRET = new_standard_secret(seed=31)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gunicorn(transactional_db: None, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    parts = urlsplit(os.environ["DATABASE_URL"])
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        # The server must see the test database pytest-django made (and the rows this test commits).
        "DATABASE_URL": urlunsplit(parts._replace(path="/" + db.settings_dict["NAME"])),
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",  # nothing queued anywhere: enqueue fails softly
    }
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=20)


def _post_chunked(port: int, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        # An iterable body and no Content-Length: http.client sends Transfer-Encoding: chunked.
        conn.request("POST", "/webhooks/inhouse/", body=iter(chunks), headers=headers, encode_chunked=True)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _connection() -> None:
    connection_import(
        data=[
            {
                "slug": "inhouse",
                "kind": "rest",
                "base_url": "http://127.0.0.1:9",
                "credentials": {"access_token": "t"},
                "webhook_secret": SECRET,
                "options": {
                    "streams": [
                        {
                            "name": "jobs",
                            "entity": "project",
                            "path": "/jobs",
                            "pagination": {"style": "page", "page_size": 100},
                            "id_path": "id",
                            "updated_at_path": "updated",
                            "fields": {"name": "title"},
                        }
                    ]
                },
            }
        ],
        actor="system:test",
    )


def test_a_chunked_delivery_is_read_in_full_and_stored(gunicorn: int) -> None:
    _connection()
    record = {"id": "J-1", "updated": "2026-01-05T10:00:00Z", "title": "Harbor " + "x" * 200_000}
    headers, body = standard_delivery(SECRET, "jobs.updated", record)
    chunks = [body[i : i + 8192] for i in range(0, len(body), 8192)]

    status, answer = _post_chunked(gunicorn, headers, chunks)

    assert status == 202, answer
    stored = WebhookDelivery.objects.get()
    assert bytes(stored.body) == body and stored.signature_valid


def test_a_chunked_delivery_over_one_mebibyte_is_413(gunicorn: int) -> None:
    _connection()
    headers, _ = standard_delivery(SECRET, "jobs.updated", {"id": "J-2"})
    chunks = [b"x" * 65536] * (schemes.MAX_BODY // 65536 + 2)

    status, answer = _post_chunked(gunicorn, headers, chunks)

    assert status == 413, answer
    assert not WebhookDelivery.objects.exists()
