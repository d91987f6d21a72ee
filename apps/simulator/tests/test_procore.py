from __future__ import annotations

from apps.simulator.common import procore_time

from .conftest import Client
from .helpers import procore_all

COS = "/rest/v1.0/companies/4242/change_order_packages"


def test_auth_and_company_header(client: Client) -> None:
    no_token = client.session.get(
        client.base + "/rest/v1.0/projects?company_id=4242", headers={"Procore-Company-Id": "4242"}
    )
    assert no_token.status_code == 401 and no_token.json()["errors"]
    assert "Doorkeeper" in no_token.headers["WWW-Authenticate"]
    missing = client.procore("GET", "/rest/v1.0/projects?company_id=4242", headers={"Procore-Company-Id": ""})
    assert missing.status_code == 400 and "Procore-Company-Id" in missing.json()["errors"]
    wrong = client.procore("GET", "/rest/v1.0/projects?company_id=4242", headers={"Procore-Company-Id": "1"})
    assert wrong.status_code == 403
    assert client.procore("GET", "/rest/v1.0/companies/1/vendors").status_code == 403
    assert client.procore("GET", "/rest/v1.0/projects").status_code == 400  # company_id is required


def test_paging_headers_and_links(client: Client) -> None:
    company = client.server.company
    total = len(company.pc_change_orders)
    first = client.procore("GET", COS)
    assert first.headers["Total"] == str(total) and first.headers["Per-Page"] == "100"
    assert len(first.json()) == 100
    links = first.links
    assert set(links) == {"next", "last"} and links["next"]["url"].startswith(client.base)
    assert f"page={-(-total // 100)}" in links["last"]["url"]
    middle = client.procore("GET", links["next"]["url"])
    assert set(middle.links) == {"first", "prev", "next", "last"}
    last = client.procore("GET", links["last"]["url"])
    assert set(last.links) == {"first", "prev"} and len(last.json()) == total - 100 * (-(-total // 100) - 1)
    clamped = client.procore("GET", COS, params={"per_page": 5000})
    assert clamped.headers["Per-Page"] == "1000" and len(clamped.json()) == min(1000, total)
    beyond = client.procore("GET", COS, params={"page": 999})
    assert beyond.status_code == 200 and beyond.json() == []
    assert client.procore("GET", COS, params={"page": "0"}).status_code == 400


def test_follow_links_collects_everything_in_order(client: Client) -> None:
    company = client.server.company
    rows = procore_all(client, COS + "?per_page=250")
    assert len(rows) == len(company.pc_change_orders) == len({r["id"] for r in rows})
    keys = [(r["updated_at"], r["id"]) for r in rows]
    assert keys == sorted(keys)
    co = rows[0]
    assert set(co) >= {
        "id",
        "number",
        "title",
        "status",
        "grand_total",
        "project_id",
        "created_at",
        "updated_at",
    }
    assert co["status"] in {
        "draft",
        "pending - in review",
        "pending - pricing",
        "approved",
        "rejected",
        "void",
    }
    assert isinstance(co["grand_total"], str) and len(co["grand_total"].split(".")[1]) == 2


def test_updated_at_filter_is_inclusive(client: Client) -> None:
    company = client.server.company
    stamps = sorted(c.updated for c in company.pc_change_orders.values())
    lo, hi = stamps[len(stamps) // 4], stamps[len(stamps) // 2]
    window = f"{procore_time(lo)}...{procore_time(hi)}"
    rows = procore_all(client, f"{COS}?per_page=1000&filters[updated_at]={window}")
    assert len(rows) == sum(lo <= s <= hi for s in stamps)
    assert rows[0]["updated_at"] == procore_time(lo) and rows[-1]["updated_at"] == procore_time(hi)
    bad = client.procore("GET", COS, params={"filters[updated_at]": "yesterday"})
    assert bad.status_code == 400


def test_projects_and_single_reads(client: Client) -> None:
    company = client.server.company
    projects = procore_all(client, "/rest/v1.0/projects?company_id=4242&per_page=1000")
    assert len(projects) == len(company.pc_projects)
    p = projects[0]
    assert set(p) >= {
        "id",
        "name",
        "project_number",
        "origin_id",
        "origin_code",
        "total_value",
        "schedule_status",
        "active",
        "start_date",
        "completion_date",
        "company",
        "created_at",
        "updated_at",
    }
    assert p["company"]["id"] == 4242 and p["origin_id"] in company.qbo_customers
    assert p["schedule_status"] in {"on_track", "at_risk", "behind"} and p["project_number"].startswith("P-")
    one = client.procore("GET", f"/rest/v1.0/projects/{p['id']}", params={"company_id": 4242}).json()
    assert one == p
    co = next(iter(company.pc_change_orders.values()))
    got = client.procore(
        "GET", f"/rest/v1.0/change_order_packages/{co.id}", params={"project_id": co.project_id}
    )
    assert got.json()["id"] == co.id
    wrong = client.procore(
        "GET", f"/rest/v1.0/change_order_packages/{co.id}", params={"project_id": p["id"] + 7}
    )
    assert wrong.status_code == 404


def test_project_scoped_equals_company_wide(client: Client) -> None:
    company = client.server.company
    project_id = next(iter(company.pc_projects))
    scoped = procore_all(client, f"/rest/v1.0/change_order_packages?project_id={project_id}")
    wide = [c for c in procore_all(client, COS + "?per_page=1000") if c["project_id"] == project_id]
    assert scoped == wide and scoped
    assert client.procore("GET", "/rest/v1.0/change_order_packages").status_code == 400
    assert client.procore("GET", "/rest/v1.0/change_order_packages?project_id=1").status_code == 404
    tasks = procore_all(client, f"/rest/v1.0/projects/{project_id}/schedule/tasks?filters[milestone]=true")
    assert len(tasks) == 5 and all(t["milestone"] for t in tasks)
    assert set(tasks[0]) >= {
        "id",
        "name",
        "finish",
        "actual_finish",
        "percentage",
        "project_id",
        "created_at",
    }
    everything = procore_all(client, f"/rest/v1.0/projects/{project_id}/schedule/tasks")
    assert len(everything) > 5  # the milestone filter matters
    milestones = procore_all(
        client, "/rest/v1.0/companies/4242/schedule/tasks?filters[milestone]=true&per_page=1000"
    )
    assert len(milestones) == 5 * len(company.pc_projects)
    subs = procore_all(client, f"/rest/v1.1/projects/{project_id}/submittals")
    wide_subs = [
        s
        for s in procore_all(client, "/rest/v1.1/companies/4242/submittals?per_page=1000")
        if s["project_id"] == project_id
    ]
    assert subs == wide_subs and subs
    s = subs[0]
    assert isinstance(s["custom_fields"]["schedule_critical"]["value"], bool) and s["status"]["name"]
    assert s["responsible_contractor"]["id"] in company.pc_vendors and isinstance(s["revision"], int)
    assert "returned_date" in s and s["due_date"]
    single = client.procore("GET", f"/rest/v1.1/projects/{project_id}/submittals/{s['id']}").json()
    assert single == s


def test_filter_by_ids_and_vendors(client: Client) -> None:
    company = client.server.company
    wanted = sorted(company.pc_change_orders)[:3]
    query = "&".join(f"filters[id][]={i}" for i in wanted)
    rows = client.procore("GET", f"{COS}?{query}").json()
    assert sorted(r["id"] for r in rows) == wanted
    vendors = procore_all(client, "/rest/v1.0/companies/4242/vendors")
    assert len(vendors) == len(company.pc_vendors)
    assert set(vendors[0]) >= {
        "id",
        "name",
        "abbreviated_name",
        "email_address",
        "is_active",
        "created_at",
        "updated_at",
    }


def test_patch_change_order_status(fresh: Client) -> None:
    company = fresh.server.company
    co = next(iter(company.pc_change_orders.values()))
    before = co.updated
    url = f"/rest/v1.0/change_order_packages/{co.id}?project_id={co.project_id}"
    resp = fresh.procore("PATCH", url, json={"change_order_package": {"status": "rejected"}})
    assert resp.status_code == 200 and resp.json()["status"] == "rejected"
    assert co.status == "rejected" and co.updated > before
    latest = procore_all(fresh, COS + "?per_page=1000")[-1]
    assert latest["id"] == co.id
    [note] = fresh.server.notes
    assert note["system"] == "procore" and note["target"] == co.id
    assert fresh.procore("PATCH", url, json={"change_order_package": {"status": "maybe"}}).status_code == 422
    assert fresh.procore("PATCH", url, data=b"nope").status_code == 400


def test_deleted_records_disappear(fresh: Client) -> None:
    company = fresh.server.company
    project_id = next(iter(company.pc_projects))
    co_id = next(c.id for c in company.pc_change_orders.values() if c.project_id != project_id)
    company.delete("procore", "change_order", co_id)
    company.delete("procore", "project", project_id)
    assert fresh.procore("GET", f"/rest/v1.0/projects/{project_id}?company_id=4242").status_code == 404
    assert (
        fresh.procore("GET", f"/rest/v1.0/change_order_packages?project_id={project_id}").status_code == 404
    )
    assert co_id not in {c["id"] for c in procore_all(fresh, COS + "?per_page=1000")}
    assert int(fresh.procore("GET", COS).headers["Total"]) == len(company.pc_change_orders)


def test_mutations_visible_through_updated_at_window(fresh: Client) -> None:
    company = fresh.server.company
    cursor = max(c.updated for c in company.pc_change_orders.values())
    touched = {i for s, k, i in company.mutate(fraction=0.1, seed=5) if k == "change_order"}
    window = f"{procore_time(cursor + 1000)}...{procore_time(cursor + 10**10)}"
    rows = procore_all(fresh, f"{COS}?per_page=1000&filters[updated_at]={window}")
    assert {r["id"] for r in rows} == touched and touched
    unencoded = fresh.session.get(
        f"{fresh.base}{COS}?filters[updated_at]=2020-01-01T00:00:00+00:00...2030-01-01T00:00:00+00:00",
        headers={"Authorization": "Bearer sim-procore-token", "Procore-Company-Id": "4242"},
    )
    assert unencoded.status_code == 200 and unencoded.headers["Total"] == str(len(company.pc_change_orders))
