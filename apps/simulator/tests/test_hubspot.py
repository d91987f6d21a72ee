from __future__ import annotations

from datetime import datetime

from apps.simulator.common import to_ms

from .conftest import Client
from .helpers import hubspot_all

SEARCH = "/crm/v3/objects/companies/search"


def _search(client: Client, **body: object) -> dict:
    resp = client.hubspot("POST", SEARCH, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_auth_required(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer sim-qbo-token"}):
        resp = client.session.post(client.base + SEARCH, json={}, headers=headers)
        assert resp.status_code == 401
        body = resp.json()
        assert (
            body["status"] == "error"
            and body["category"] == "INVALID_AUTHENTICATION"
            and body["correlationId"]
        )


def test_search_pages_everything_in_stable_order(client: Client) -> None:
    company = client.server.company
    rows = hubspot_all(client)
    assert len(rows) == len(company.hs_companies)
    assert len({r["id"] for r in rows}) == len(rows)
    keys = [(r["properties"]["hs_lastmodifieddate"], int(r["id"])) for r in rows]
    assert keys == sorted(keys)
    first = rows[0]
    assert set(first) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    props = first["properties"]
    assert props["hs_object_id"] == first["id"] and props["hs_lastmodifieddate"] == first["updatedAt"]
    assert all(isinstance(v, str) or v is None for v in props.values())
    assert datetime.fromisoformat(props["hs_lastmodifieddate"]).tzinfo is not None
    record = company.hs_companies[first["id"]]
    assert props["name"] == record.name and props["domain"] == record.domain
    assert props["hubspot_owner_id"] == record.owner_id


def test_search_limits_and_paging_fields(client: Client) -> None:
    total = len(client.server.company.hs_companies)
    assert total == 60
    page = _search(client, limit=25, sorts=["hs_lastmodifieddate"])
    assert len(page["results"]) == 25 and page["paging"]["next"]["after"] == "25" and page["total"] == total
    last = _search(client, limit=25, after="50", sorts=["hs_lastmodifieddate"])
    assert "paging" not in last and len(last["results"]) == 10
    assert len(_search(client, limit=200)["results"]) == total
    assert len(_search(client)["results"]) == 10  # HubSpot's default page size
    too_big = client.hubspot("POST", SEARCH, json={"limit": 201})
    assert too_big.status_code == 400 and too_big.json()["category"] == "VALIDATION_ERROR"
    capped = client.hubspot("POST", SEARCH, json={"limit": 10, "after": "10000"})
    assert capped.status_code == 400 and capped.json()["status"] == "error"
    assert client.hubspot("POST", SEARCH, data=b"{not json").status_code == 400


def test_default_and_requested_properties(client: Client) -> None:
    plain = _search(client, limit=1)["results"][0]["properties"]
    assert set(plain) == {"createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"}
    chosen = _search(client, limit=1, properties=["contract_renewal_date", "nonexistent"])["results"][0]
    assert set(chosen["properties"]) == {
        "contract_renewal_date",
        "createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
    }


def test_filters_gt_gte_lt_on_a_shared_timestamp(client: Client) -> None:
    company = client.server.company
    stamps = sorted(c.updated for c in company.hs_companies.values())
    pivot = stamps[len(stamps) // 2]

    def count(op: str) -> int:
        flt = {"propertyName": "hs_lastmodifieddate", "operator": op, "value": str(pivot)}
        return _search(client, limit=1, filterGroups=[{"filters": [flt]}])["total"]

    assert count("GTE") == sum(1 for s in stamps if s >= pivot)
    assert count("GT") == sum(1 for s in stamps if s > pivot)
    assert count("LT") == sum(1 for s in stamps if s < pivot)
    assert count("LTE") + count("GT") == len(stamps)
    assert count("EQ") == stamps.count(pivot) >= 1
    iso = {
        "propertyName": "hs_lastmodifieddate",
        "operator": "GTE",
        "value": datetime.fromtimestamp(pivot / 1000).astimezone().isoformat(timespec="milliseconds"),
    }
    assert _search(client, limit=1, filterGroups=[{"filters": [iso]}])["total"] == count("GTE")
    two_groups = [
        {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "LT", "value": str(pivot)}]},
        {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GT", "value": str(pivot)}]},
    ]
    assert _search(client, limit=1, filterGroups=two_groups)["total"] == len(stamps) - stamps.count(pivot)
    descending = _search(
        client, limit=5, sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}]
    )
    got = [r["properties"]["hs_lastmodifieddate"] for r in descending["results"]]
    assert got == sorted(got, reverse=True)
    bad = client.hubspot(
        "POST",
        SEARCH,
        json={"filterGroups": [{"filters": [{"propertyName": "name", "operator": "FUZZY", "value": "x"}]}]},
    )
    assert bad.status_code == 400


def test_search_cap_is_configurable(fresh: Client) -> None:
    fresh.server.hubspot_search_cap = 10
    assert _search(fresh, limit=5, after="5")["paging"]["next"]["after"] == "10"
    resp = fresh.hubspot("POST", SEARCH, json={"limit": 5, "after": "10"})
    assert resp.status_code == 400 and "at most 10" in resp.json()["message"]


def test_read_one_list_all_and_deletes(fresh: Client) -> None:
    company = fresh.server.company
    some_id = sorted(company.hs_companies, key=int)[3]
    one = fresh.hubspot("GET", f"/crm/v3/objects/companies/{some_id}", params={"properties": "name,domain"})
    assert one.status_code == 200 and one.json()["properties"]["name"] == company.hs_companies[some_id].name
    ids, after = [], None
    while True:
        page = fresh.hubspot(
            "GET", "/crm/v3/objects/companies", params={"limit": 7, **({"after": after} if after else {})}
        ).json()
        assert len(page["results"]) <= 7
        ids += [r["id"] for r in page["results"]]
        after = page.get("paging", {}).get("next", {}).get("after")
        if after is None:
            break
        assert page["paging"]["next"]["link"].startswith(fresh.base)
    assert ids == sorted(company.hs_companies, key=int)
    company.delete("hubspot", "company", some_id)
    gone = fresh.hubspot("GET", f"/crm/v3/objects/companies/{some_id}")
    assert gone.status_code == 404 and gone.json()["category"] == "OBJECT_NOT_FOUND"
    assert some_id not in {r["id"] for r in hubspot_all(fresh)}


def test_owners(client: Client) -> None:
    page = client.hubspot("GET", "/crm/v3/owners", params={"limit": 5}).json()
    assert len(page["results"]) == 5 and page["paging"]["next"]["after"]
    rest = client.hubspot(
        "GET", "/crm/v3/owners", params={"limit": 500, "after": page["paging"]["next"]["after"]}
    )
    owners = page["results"] + rest.json()["results"]
    assert "paging" not in rest.json() and len(owners) == 12
    assert set(owners[0]) >= {
        "id",
        "email",
        "firstName",
        "lastName",
        "userId",
        "createdAt",
        "updatedAt",
        "archived",
    }
    assert "maria.chen@fulcrum-demo.test" in {o["email"] for o in owners}
    assert client.hubspot("GET", "/crm/v3/owners", params={"limit": 501}).status_code == 400
    one = client.hubspot("GET", f"/crm/v3/owners/{owners[1]['id']}").json()
    assert one["email"] == owners[1]["email"]


def test_note_write_back(fresh: Client) -> None:
    target = next(iter(fresh.server.company.hs_companies))
    body = {
        "properties": {
            "hs_note_body": "Fulcrum: CO 12 needs executive review",
            "hs_timestamp": "2026-11-23T12:00:00Z",
        },
        "associations": [
            {
                "to": {"id": target},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 190}],
            }
        ],
    }
    resp = fresh.hubspot("POST", "/crm/v3/objects/notes", json=body, headers={"Idempotency-Key": "esc-1"})
    assert resp.status_code == 201
    created = resp.json()
    assert created["id"] and created["properties"]["hs_note_body"] == body["properties"]["hs_note_body"]
    assert created["createdAt"]
    [note] = fresh.server.notes
    # HubSpot documents no idempotency key on notes: the header is ignored.
    assert note["system"] == "hubspot" and note["target"] == target and note["idempotency_key"] is None
    assert note["body"] == "Fulcrum: CO 12 needs executive review" and note["received_at"]
    body["associations"][0]["to"]["id"] = "1"
    assert fresh.hubspot("POST", "/crm/v3/objects/notes", json=body).status_code == 400
    del body["properties"]["hs_timestamp"]
    assert fresh.hubspot("POST", "/crm/v3/objects/notes", json=body).status_code == 400
    assert len(fresh.server.notes) == 1


def test_mutations_visible_to_incremental_search(fresh: Client) -> None:
    company = fresh.server.company
    cursor = max(c.updated for c in company.hs_companies.values())
    touched = company.mutate(fraction=0.2, seed=4)
    mutated = {str(i) for s, k, i in touched if k == "company"}
    assert mutated
    rows = hubspot_all(fresh, since_ms=cursor + 1)
    assert {r["id"] for r in rows} == mutated
    assert all(to_ms(datetime.fromisoformat(r["updatedAt"])) > cursor for r in rows)
