from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from apps.simulator import FaultPlan, FaultRule

from .conftest import Client

COS = "/rest/v1.0/projects?company_id=4242"
QUERY = "SELECT * FROM Invoice MAXRESULTS 10"


def test_status_fault_fires_count_times_with_vendor_bodies(fresh: Client) -> None:
    fresh.server.faults.add("status", path_prefix="/rest/", status=503, count=2)
    assert [fresh.procore("GET", COS).status_code for _ in range(3)] == [503, 503, 200]
    fresh.server.faults.add("status", path_prefix="/v3/", status=500)
    failed = fresh.query(QUERY)
    assert failed.status_code == 500 and failed.json()["Fault"]["type"] == "SystemFault"
    fresh.server.faults.add("status", path_prefix="/crm/", status=502, body={"custom": True})
    resp = fresh.hubspot("GET", "/crm/v3/owners")
    assert resp.status_code == 502 and resp.json() == {"custom": True}
    assert fresh.hubspot("GET", "/crm/v3/owners").status_code == 200


def test_rate_limit_has_retry_after(fresh: Client) -> None:
    fresh.server.faults.add("rate_limit", path_prefix="/crm/", retry_after=7)
    resp = fresh.hubspot("POST", "/crm/v3/objects/companies/search", json={})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.json()["errorType"] == "RATE_LIMIT"
    fresh.server.faults.add("rate_limit", path_prefix="/v3/")
    qbo = fresh.query(QUERY)
    assert qbo.status_code == 429 and qbo.json()["Fault"]["Error"][0]["code"] == "3001"
    assert fresh.query(QUERY).status_code == 200


def test_delay_produces_client_timeouts(fresh: Client) -> None:
    fresh.server.faults.add("delay", path_prefix="/rest/", seconds=1.0)
    with pytest.raises(requests.Timeout):
        fresh.session.get(
            fresh.base + COS,
            headers={"Authorization": "Bearer sim-procore-token", "Procore-Company-Id": "4242"},
            timeout=0.2,
        )
    started = time.perf_counter()
    assert fresh.procore("GET", COS).status_code == 200
    assert time.perf_counter() - started < 0.5


def test_malformed_json(fresh: Client) -> None:
    fresh.server.faults.add("malformed", regex=r"/query\?")
    broken = fresh.query(QUERY)
    assert broken.status_code == 200 and int(broken.headers["Content-Length"]) == len(broken.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.content)
    assert fresh.query(QUERY).json()["QueryResponse"]["Invoice"]


def test_duplicate_page_repeats_previous_last_record(fresh: Client) -> None:
    first = fresh.procore("GET", COS, params={"per_page": 10, "page": 1}).json()
    fresh.server.faults.add("duplicate_page", path_prefix="/rest/v1.0/projects")
    second = fresh.procore("GET", COS, params={"per_page": 10, "page": 2}).json()
    assert len(second) == 11 and second[0] == first[-1]
    fresh.server.faults.add("duplicate_page", path_prefix="/v3/")
    page2 = fresh.query("SELECT * FROM Bill STARTPOSITION 11 MAXRESULTS 10").json()["QueryResponse"]["Bill"]
    page1 = fresh.query("SELECT * FROM Bill STARTPOSITION 1 MAXRESULTS 10").json()["QueryResponse"]["Bill"]
    assert page2[0] == page1[-1] and len(page2) == 11
    fresh.server.faults.add("duplicate_page", path_prefix="/crm/")
    hs = fresh.hubspot("POST", "/crm/v3/objects/companies/search", json={"limit": 5, "after": "5"}).json()
    hs1 = fresh.hubspot("POST", "/crm/v3/objects/companies/search", json={"limit": 5}).json()
    assert hs["results"][0] == hs1["results"][-1]


def test_drop_connection(fresh: Client) -> None:
    fresh.server.faults.add("drop_connection", path_prefix="/v3/")
    with pytest.raises(requests.ConnectionError):
        fresh.query(QUERY)
    assert fresh.query(QUERY).status_code == 200


def test_skip_method_regex_and_forever(fresh: Client) -> None:
    faults = fresh.server.faults
    faults.add("status", path_prefix="/rest/", skip=1, count=None, method="GET", regex=r"page=2", status=500)
    assert fresh.procore("GET", COS, params={"page": 2}).status_code == 200  # skipped once
    assert [fresh.procore("GET", COS, params={"page": 2}).status_code for _ in range(3)] == [500] * 3
    assert fresh.procore("GET", COS, params={"page": 1}).status_code == 200
    [rule] = faults.rules
    assert rule.fired == 3 and rule.seen == 4
    assert fresh.session.get(fresh.base + "/_sim/health").json() == {"ok": True}  # control never faulted


def test_fault_plan_over_http_and_json_roundtrip(fresh: Client) -> None:
    rules = [
        {"kind": "status", "path_prefix": "/crm/", "status": 500, "count": 1},
        {"kind": "rate_limit", "regex": "^/v3/", "retry_after": 3, "count": None},
    ]
    resp = fresh.session.post(fresh.base + "/_sim/faults", json=rules)
    assert resp.status_code == 200 and [r["kind"] for r in resp.json()] == ["status", "rate_limit"]
    assert fresh.hubspot("GET", "/crm/v3/owners").status_code == 500
    assert fresh.query(QUERY).headers["Retry-After"] == "3"
    plan = FaultPlan.from_json(fresh.session.get(fresh.base + "/_sim/faults").json())
    assert plan.rules[0].fired == 1 and json.loads(json.dumps(plan.to_json())) == plan.to_json()
    assert fresh.session.post(fresh.base + "/_sim/faults", json=[{"kind": "explode"}]).status_code == 400
    fresh.session.post(fresh.base + "/_sim/faults", json=[])
    assert fresh.query(QUERY).status_code == 200


def test_counters_are_thread_safe() -> None:
    plan = FaultPlan([FaultRule(kind="status", count=100)])
    fired: list[FaultRule | None] = []

    def worker() -> None:
        for _ in range(50):
            fired.append(plan.match("GET", "/x", "/x"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for f in fired if f is not None) == 100
    with pytest.raises(ValueError):
        FaultRule(kind="nope")


def test_rate_limit_window_answers_429_until_its_one_reset(fresh: Client) -> None:
    """A rate-limit window is how Procore's limits behave (developers.procore.com/documentation/rate-limiting:
    the spike limit's window resets at X-Rate-Limit-Reset): every call inside the window gets 429 with the
    same reset, and the first call after it goes through."""
    fresh.server.faults.add("rate_limit", path_prefix="/rest/", window=1.5, count=None)
    first = fresh.procore("GET", COS)
    second = fresh.procore("GET", COS)
    assert first.status_code == second.status_code == 429
    reset = int(first.headers["X-Rate-Limit-Reset"])
    assert second.headers["X-Rate-Limit-Reset"] == str(reset)
    assert time.time() < reset <= time.time() + 2.5
    time.sleep(max(0.0, reset - time.time()) + 0.05)
    assert fresh.procore("GET", COS).status_code == 200


def test_rate_limit_window_is_only_for_rate_limits() -> None:
    with pytest.raises(ValueError, match="window"):
        FaultRule(kind="status", window=2.0)
