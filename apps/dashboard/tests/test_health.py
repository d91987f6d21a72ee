"""/healthz per SPEC "Operations": 200 only with database, broker and a worker answering a ping."""

from __future__ import annotations

import time

import pytest

from apps.dashboard import health

pytestmark = pytest.mark.django_db


def test_no_worker_answers_503_naming_the_worker(client, monkeypatch):
    monkeypatch.setattr(health, "WORKER_PING_TIMEOUT", 0.5)
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and body["worker"] is False and body["failing"] == ["worker"]
    assert body["database"] is True and body["broker"] is True
    assert response["Cache-Control"].startswith("max-age=0")


def test_broker_down_answers_503_naming_broker_and_worker(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker", "worker"]


def test_database_down_answers_503_naming_the_database(client, monkeypatch):
    monkeypatch.setattr(health, "_database", lambda: False)
    monkeypatch.setattr(health, "workers_ping", lambda **_: ["w1@host"])
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]


def test_the_ping_waits_three_seconds(client, monkeypatch):
    asked = []
    monkeypatch.setattr(health, "workers_ping", lambda *, timeout: asked.append(timeout) or [])
    assert client.get("/healthz").status_code == 503
    assert asked == [3.0]
