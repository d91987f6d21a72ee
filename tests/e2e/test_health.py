"""/healthz against a real Celery worker: 200 while it answers pings, 503 naming it once it is gone."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_a_running_worker_makes_it_200(client, celery_worker):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body == {**body, "ok": True, "database": True, "broker": True, "worker": True, "failing": []}
    assert any(name.startswith("e2e-") for name in body["workers"])
    celery_worker.terminate()
    celery_worker.wait(timeout=20)
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["failing"] == ["worker"]
