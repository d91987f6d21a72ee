"""The simulator's Procore API: only the documented routes, parameters, headers, fields and enums."""

from __future__ import annotations

import time

from apps.simulator.common import procore_time
from apps.simulator.names import CO_STATUS_ENUM
from apps.simulator.procore import SCHEDULE_CRITICAL_FIELD

from .conftest import Client
from .helpers import procore_all

PROJECTS = "/rest/v1.0/projects?company_id=4242"


def _busiest_project(client: Client) -> int:
    company = client.server.company
    counts: dict[int, int] = {}
    for co in company.pc_change_orders.values():
        counts[co.project_id] = counts.get(co.project_id, 0) + 1
    return max(counts, key=lambda pid: (counts[pid], -pid))


def cos(project_id: int) -> str:
    return f"/rest/v1.0/change_order_packages?project_id={project_id}"


def test_auth_and_company_header(client: Client) -> None:
    no_token = client.session.get(client.base + PROJECTS, headers={"Procore-Company-Id": "4242"})
    assert no_token.status_code == 401 and no_token.json()["errors"]
    assert "Doorkeeper" in no_token.headers["WWW-Authenticate"]
    missing = client.procore("GET", PROJECTS, headers={"Procore-Company-Id": ""})
    assert missing.status_code == 400 and "Procore-Company-Id" in missing.json()["errors"]
    wrong = client.procore("GET", PROJECTS, headers={"Procore-Company-Id": "1"})
    assert wrong.status_code == 403
    assert client.procore("GET", "/rest/v1.0/vendors?company_id=1").status_code == 403
    assert client.procore("GET", "/rest/v1.0/projects").status_code == 400  # company_id is required


def test_undocumented_company_level_lists_are_404(client: Client) -> None:
    for path in (
        "/rest/v1.0/companies/4242/change_order_packages",
        "/rest/v1.0/companies/4242/schedule/tasks",
        "/rest/v1.0/companies/4242/vendors",
        "/rest/v1.1/companies/4242/submittals",
        "/rest/v1.0/projects/1/schedule/tasks",
    ):
        resp = client.procore("GET", path)
        assert resp.status_code == 404, path


def test_paging_headers_and_links(client: Client) -> None:
    company = client.server.company
    total = len(company.pc_projects)
    first = client.procore("GET", PROJECTS, params={"per_page": 7})
    assert first.headers["Total"] == str(total) and first.headers["Per-Page"] == "7"
    assert len(first.json()) == 7
    links = first.links
    assert set(links) == {"next", "last"} and links["next"]["url"].startswith(client.base)
    assert f"page={-(-total // 7)}" in links["last"]["url"]
    middle = client.procore("GET", links["next"]["url"])
    assert set(middle.links) == {"first", "prev", "next", "last"}
    last = client.procore("GET", links["last"]["url"])
    assert set(last.links) == {"first", "prev"} and len(last.json()) == total - 7 * (-(-total // 7) - 1)
    clamped = client.procore("GET", PROJECTS, params={"per_page": 5000})
    assert clamped.headers["Per-Page"] == "1000" and len(clamped.json()) == min(1000, total)
    assert client.procore("GET", PROJECTS, params={"page": 999}).json() == []
    assert client.procore("GET", PROJECTS, params={"page": "0"}).status_code == 400


def test_rate_limit_headers_and_429_until_reset(fresh: Client) -> None:
    resp = fresh.procore("GET", PROJECTS)
    limit, remaining, reset = (
        int(resp.headers[f"X-Rate-Limit-{h}"]) for h in ("Limit", "Remaining", "Reset")
    )
    assert remaining < limit and reset > time.time()
    fresh.server.state.procore_rate = (2, 3600.0)
    fresh.server.state.procore_calls.clear()
    answers = [fresh.procore("GET", PROJECTS) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["X-Rate-Limit-Remaining"] for a in answers] == ["1", "0", "0"]


def test_lists_come_in_id_order_whatever_sort_asks(client: Client) -> None:
    rows = procore_all(client, PROJECTS + "&per_page=1000&sort=updated_at")
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_updated_at_filter_is_inclusive(client: Client) -> None:
    company = client.server.company
    stamps = sorted(p.updated for p in company.pc_projects.values())
    lo, hi = stamps[len(stamps) // 4], stamps[len(stamps) // 2]
    window = f"{procore_time(lo)}...{procore_time(hi)}"
    rows = procore_all(client, f"{PROJECTS}&per_page=1000&filters[updated_at]={window}")
    assert len(rows) == sum(lo <= s <= hi for s in stamps)
    assert {r["updated_at"] for r in rows} <= {procore_time(s) for s in stamps if lo <= s <= hi}
    assert client.procore("GET", PROJECTS, params={"filters[updated_at]": "yesterday"}).status_code == 400


def test_projects_documented_fields_and_views(client: Client) -> None:
    company = client.server.company
    projects = procore_all(client, PROJECTS + "&per_page=1000")
    assert len(projects) == len(company.pc_projects)
    p = projects[0]
    assert "schedule_status" not in p and "project_id" not in p
    assert isinstance(p["total_value"], int | float) and p["company"]["id"] == 4242
    assert p["origin_id"] in company.qbo_customers and p["project_number"].startswith("P-")
    one = client.procore("GET", f"/rest/v1.0/projects/{p['id']}", params={"company_id": 4242}).json()
    assert one == p
    compact = client.procore("GET", PROJECTS, params={"serializer_view": "compact"}).json()[0]
    assert set(compact) == {"id", "name", "display_name"}
    active = procore_all(client, PROJECTS + "&per_page=1000&filters[by_status]=Active")
    inactive = procore_all(client, PROJECTS + "&per_page=1000&filters[by_status]=Inactive")
    assert len(active) + len(inactive) == len(projects) and all(r["active"] for r in active)
    assert client.procore("GET", PROJECTS, params={"filters[by_status]": "Open"}).status_code == 400


def test_project_scoped_lists_without_project_id(client: Client) -> None:
    company = client.server.company
    project_id = _busiest_project(client)
    scoped = procore_all(client, cos(project_id))
    assert {c["id"] for c in scoped} == {
        c.id for c in company.pc_change_orders.values() if c.project_id == project_id
    }
    assert all("project_id" not in c and c["status"] in CO_STATUS_ENUM for c in scoped)
    assert isinstance(scoped[0]["grand_total"], str) and len(scoped[0]["grand_total"].split(".")[1]) == 2
    assert client.procore("GET", "/rest/v1.0/change_order_packages").status_code == 400
    assert client.procore("GET", cos(1)).status_code == 404
    tasks = procore_all(client, f"/rest/v1.0/tasks?project_id={project_id}")
    assert tasks and all("project_id" not in t and t["finish_datetime"].endswith("Z") for t in tasks)
    assert sum(t["milestone"] for t in tasks) == 5 and len(tasks) > 5
    task = tasks[0]
    assert client.procore("GET", f"/rest/v1.0/tasks/{task['id']}?project_id={project_id}").json() == task
    assert (
        client.procore("GET", f"/rest/v1.0/tasks/{task['id']}?project_id={project_id + 1}").status_code == 404
    )
    subs = procore_all(client, f"/rest/v1.1/projects/{project_id}/submittals")
    s = subs[0]
    assert "project_id" not in s and "returned_date" not in s and isinstance(s["revision"], str)
    assert isinstance(s["custom_fields"][SCHEDULE_CRITICAL_FIELD]["value"], bool)
    assert s["approvers"][0]["response_required"] is True and "returned_date" in s["approvers"][0]
    assert s["responsible_contractor"]["id"] in company.pc_vendors and s["status"]["name"]
    single = client.procore("GET", f"/rest/v1.1/projects/{project_id}/submittals/{s['id']}").json()
    assert single == s


def test_filter_by_ids_and_vendors(client: Client) -> None:
    company = client.server.company
    project_id = _busiest_project(client)
    wanted = sorted(c.id for c in company.pc_change_orders.values() if c.project_id == project_id)[:3]
    query = "&".join(f"filters[id][]={i}" for i in wanted)
    rows = client.procore("GET", f"{cos(project_id)}&{query}").json()
    assert sorted(r["id"] for r in rows) == wanted
    vendors = procore_all(client, "/rest/v1.0/vendors?company_id=4242")
    assert len(vendors) == len(company.pc_vendors)
    assert set(vendors[0]) >= {"id", "name", "abbreviated_name", "email_address", "is_active", "updated_at"}


def test_patch_change_order_status(fresh: Client) -> None:
    company = fresh.server.company
    co = next(iter(company.pc_change_orders.values()))
    before = co.updated
    url = f"/rest/v1.0/change_order_packages/{co.id}?project_id={co.project_id}"
    resp = fresh.procore("PATCH", url, json={"change_order_package": {"status": "rejected"}})
    assert resp.status_code == 200 and resp.json()["status"] == "rejected"
    assert co.status == "rejected" and co.updated > before
    [note] = fresh.server.notes
    assert note["system"] == "procore" and note["target"] == co.id
    assert fresh.procore("PATCH", url, json={"change_order_package": {"status": "maybe"}}).status_code == 422
    assert (
        fresh.procore("PATCH", url, json={"change_order_package": {"status": "no_charge"}}).status_code == 200
    )
    assert fresh.procore("PATCH", url, data=b"nope").status_code == 400


def test_deleted_records_disappear(fresh: Client) -> None:
    company = fresh.server.company
    project_id = next(iter(company.pc_projects))
    other = next(c for c in company.pc_change_orders.values() if c.project_id != project_id)
    company.delete("procore", "change_order", other.id)
    company.delete("procore", "project", project_id)
    assert fresh.procore("GET", f"/rest/v1.0/projects/{project_id}?company_id=4242").status_code == 404
    assert fresh.procore("GET", cos(project_id)).status_code == 404
    assert other.id not in {c["id"] for c in procore_all(fresh, cos(other.project_id))}


def test_mutations_visible_through_updated_at_window(fresh: Client) -> None:
    company = fresh.server.company
    cursor = max(p.updated for p in company.pc_projects.values())
    touched = {i for s, k, i in company.mutate(fraction=0.1, seed=5) if k == "project"}
    window = f"{procore_time(cursor + 1000)}...{procore_time(cursor + 10**10)}"
    rows = procore_all(fresh, f"{PROJECTS}&per_page=1000&filters[updated_at]={window}")
    assert {r["id"] for r in rows} == touched and touched
    unencoded = fresh.session.get(
        f"{fresh.base}{PROJECTS}&filters[updated_at]=2020-01-01T00:00:00+00:00...2030-01-01T00:00:00+00:00",
        headers={"Authorization": "Bearer sim-procore-token", "Procore-Company-Id": "4242"},
    )
    assert unencoded.status_code == 200 and unencoded.headers["Total"] == str(len(company.pc_projects))
