# ruff: noqa: S608 - QuickBooks query language, not SQL
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from apps.simulator.common import qbo_time, to_ms

from .conftest import Client
from .helpers import qbo_all

REALM = "/v3/company/9130350000000001"


def _fault(resp) -> dict:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    error = body["Fault"]["Error"][0]
    assert (
        set(error) >= {"Message", "Detail", "code"}
        and body["Fault"]["type"] == "ValidationFault"
        and body["time"]
    )
    return error


def test_auth_and_realm(client: Client) -> None:
    resp = client.session.get(
        client.base + REALM + "/query",
        params={"query": "SELECT * FROM Customer"},
        headers={"Authorization": "Bearer sim-hubspot-token"},
    )
    assert resp.status_code == 401 and resp.json()["fault"]["type"] == "AUTHENTICATION"
    other = client.qbo("GET", "/v3/company/123/query", params={"query": "SELECT * FROM Customer"})
    assert other.status_code == 403 and other.json()["Fault"]["Error"][0]["code"] == "3100"


def test_full_paging_is_oldest_first_without_gaps(client: Client) -> None:
    company = client.server.company
    rows = qbo_all(client, "Invoice")
    assert len(rows) == len(company.qbo_invoices) > 1000
    assert len({r["Id"] for r in rows}) == len(rows)
    keys = [(datetime.fromisoformat(r["MetaData"]["LastUpdatedTime"]), int(r["Id"])) for r in rows]
    assert keys == sorted(keys)
    first = client.query("SELECT * FROM Invoice STARTPOSITION 1 MAXRESULTS 1000").json()["QueryResponse"]
    assert first["startPosition"] == 1 and first["maxResults"] == 1000
    second = client.query("select * from invoice startposition 1001 maxresults 1000").json()["QueryResponse"]
    assert second["startPosition"] == 1001 and second["Invoice"][0]["Id"] == rows[1000]["Id"]
    assert client.query("SELECT * FROM Invoice").json()["QueryResponse"]["maxResults"] == 100  # default page


def test_shapes(client: Client) -> None:
    company = client.server.company
    customer = client.query("SELECT * FROM Customer WHERE Job = false MAXRESULTS 1").json()["QueryResponse"][
        "Customer"
    ][0]
    assert customer["Job"] is False and customer["PrimaryEmailAddr"]["Address"].startswith("ap@")
    assert customer["WebAddr"]["URI"].startswith("https://") and isinstance(customer["Balance"], float)
    assert customer["MetaData"]["LastUpdatedTime"].endswith("-08:00") and customer["SyncToken"] == "0"
    jobs = client.query("SELECT * FROM Customer WHERE Job = true MAXRESULTS 1000").json()["QueryResponse"][
        "Customer"
    ]
    assert len(jobs) == len(company.pc_projects) and all(j["Job"] and j["ParentRef"]["value"] for j in jobs)
    job = jobs[0]
    parent = company.qbo_customers[job["ParentRef"]["value"]]
    assert job["FullyQualifiedName"] == f"{parent.display_name}:{job['DisplayName']}"
    bill = qbo_all(client, "Bill")[0]
    line = bill["Line"][0]
    assert line["DetailType"] == "AccountBasedExpenseLineDetail" and isinstance(line["Amount"], Decimal)
    assert line["AccountBasedExpenseLineDetail"]["BillableStatus"] in {
        "Billable",
        "NotBillable",
        "HasBeenBilled",
    }
    assert bill["VendorRef"]["value"] in company.qbo_vendors and bill["DueDate"] and bill["TxnDate"]
    assert round(sum(x["Amount"] for x in bill["Line"]), 2) == bill["TotalAmt"]
    purchase = qbo_all(client, "Purchase")[0]
    assert purchase["PaymentType"] in {"Cash", "Check", "CreditCard"} and purchase["Line"]
    estimate = qbo_all(client, "Estimate")[0]
    assert estimate["TxnStatus"] and estimate["CustomerRef"]["value"] in company.qbo_customers
    invoice = qbo_all(client, "Invoice")[0]
    assert set(invoice) >= {"Id", "CustomerRef", "TotalAmt", "Balance", "TxnDate", "DueDate", "MetaData"}
    vendor = qbo_all(client, "Vendor")[0]
    assert vendor["DisplayName"] and vendor["Active"] in (True, False)


def test_where_conditions_and_count(client: Client) -> None:
    company = client.server.company
    stamps = sorted(b.updated for b in company.qbo_bills.values())
    pivot = stamps[len(stamps) // 3]
    text = qbo_time(pivot)
    for op, expected in (
        (">", sum(s > pivot for s in stamps)),
        (">=", sum(s >= pivot for s in stamps)),
        ("<", sum(s < pivot for s in stamps)),
        ("<=", sum(s <= pivot for s in stamps)),
    ):
        where = f"WHERE MetaData.LastUpdatedTime {op} '{text}'"
        count = client.query(f"SELECT COUNT(*) FROM Bill {where}").json()["QueryResponse"]["totalCount"]
        assert count == expected, op
        assert len(qbo_all(client, "Bill", where)) == expected
    utc = datetime.fromisoformat(text).astimezone().isoformat()
    assert client.query(f"SELECT COUNT(*) FROM Bill WHERE MetaData.LastUpdatedTime > '{utc}'").json()[
        "QueryResponse"
    ]["totalCount"] == sum(s > pivot for s in stamps)
    ids = sorted(company.qbo_bills, key=int)[:3]
    one = client.query(f"SELECT * FROM Bill WHERE Id = '{ids[0]}'").json()["QueryResponse"]["Bill"]
    assert [b["Id"] for b in one] == [ids[0]]
    some = client.query(f"SELECT * FROM Bill WHERE Id IN ('{ids[0]}', '{ids[1]}','{ids[2]}')").json()
    assert {b["Id"] for b in some["QueryResponse"]["Bill"]} == set(ids)
    window = (
        f"SELECT COUNT(*) FROM Bill WHERE MetaData.LastUpdatedTime >= '{text}' AND "
        f"MetaData.LastUpdatedTime < '{qbo_time(pivot + 86_400_000)}'"
    )
    assert client.query(window).json()["QueryResponse"]["totalCount"] == sum(
        pivot <= s < pivot + 86_400_000 for s in stamps
    )
    jobs = client.query("SELECT COUNT(*) FROM Customer WHERE Job = true").json()["QueryResponse"][
        "totalCount"
    ]
    assert jobs == len(company.pc_projects)


def test_orderby_desc_and_empty_result(client: Client) -> None:
    rows = client.query("SELECT * FROM Estimate ORDERBY MetaData.LastUpdatedTime DESC MAXRESULTS 50").json()
    keys = [(r["MetaData"]["LastUpdatedTime"], int(r["Id"])) for r in rows["QueryResponse"]["Estimate"]]
    assert keys == sorted(keys, reverse=True) and len(keys) == 50
    by_id = client.query("SELECT * FROM Estimate ORDERBY Id MAXRESULTS 20").json()["QueryResponse"][
        "Estimate"
    ]
    assert [int(r["Id"]) for r in by_id] == sorted(int(r["Id"]) for r in by_id)
    future = qbo_time(to_ms(datetime.now().astimezone() + timedelta(days=3650)))
    empty = client.query(f"SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '{future}'").json()
    assert empty["QueryResponse"] == {} and empty["time"]


def test_query_errors(client: Client) -> None:
    assert "1000" in _fault(client.query("SELECT * FROM Invoice MAXRESULTS 1001"))["Detail"]
    assert _fault(client.query("SELECT * FROM Widget"))["code"] == "4000"
    assert _fault(client.query("SELECT * FROM Invoice STARTPOSITION 0"))
    assert _fault(client.query("SELECT Id FROM Invoice"))
    assert _fault(client.query("SELECT * FROM Invoice WHERE TotalAmt > '5'"))
    assert _fault(client.query("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > 'yesterday'"))
    assert _fault(client.query("SELECT * FROM Invoice WHERE Job = true"))
    assert _fault(client.query("SELECT * FROM Invoice ORDERBY TotalAmt"))
    assert _fault(client.query("SELECT * FROM Invoice LIMIT 5"))


def test_forms_the_query_docs_do_not_show_are_refused_with_intuits_fault(client: Client) -> None:
    """ORDERBY (one word, one property), the documented operators and date-time literals, STARTPOSITION
    before MAXRESULTS: https://developer.intuit.com/app/developer/qbo/docs/learn/explore-the-quickbooks-online-api/data-queries"""
    refused = [
        "SELECT * FROM Invoice ORDER BY MetaData.LastUpdatedTime",
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime, Id",
        "SELECT * FROM Invoice WHERE Id != '1'",
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '2026-01-01T00:00:00Z'",
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '2026-01-01T00:00:00.123-08:00'",
        "SELECT * FROM Invoice MAXRESULTS 10 STARTPOSITION 1",
        "SELECT * FROM Invoice STARTPOSITION 1 STARTPOSITION 2",
    ]
    for text in refused:
        answer = client.query(text)
        assert answer.status_code == 400, text
        fault = answer.json()["Fault"]
        assert fault["type"] == "ValidationFault" and fault["Error"][0]["code"] == "4000", text
    accepted = [
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2026-01-01T00:00:00+00:00'"
        " ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000",
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '2011-08-10T10:20:30-0700'",
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '2015-03-01'",
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime ASC",
    ]
    for text in accepted:
        assert client.query(text).status_code == 200, text


def test_post_query_and_single_reads(fresh: Client) -> None:
    company = fresh.server.company
    posted = fresh.qbo(
        "POST",
        REALM + "/query",
        data="SELECT COUNT(*) FROM Vendor",
        headers={"Content-Type": "application/text"},
    )
    assert posted.json()["QueryResponse"]["totalCount"] == len(company.qbo_vendors)
    invoice_id = next(iter(company.qbo_invoices))
    one = fresh.qbo("GET", f"{REALM}/invoice/{invoice_id}", params={"minorversion": "75"})
    assert one.status_code == 200 and one.json()["Invoice"]["Id"] == invoice_id and one.json()["time"]
    company.delete("quickbooks", "invoice", invoice_id)
    assert _fault(fresh.qbo("GET", f"{REALM}/invoice/{invoice_id}"))["code"] == "610"
    assert invoice_id not in {r["Id"] for r in qbo_all(fresh, "Invoice")}


def test_mutation_bumps_sync_token_and_time(fresh: Client) -> None:
    company = fresh.server.company
    cursor = max(c.updated for c in company.qbo_customers.values())
    touched = {i for s, k, i in company.mutate(fraction=0.2, seed=2) if k == "customer"}
    rows = qbo_all(fresh, "Customer", f"WHERE MetaData.LastUpdatedTime > '{qbo_time(cursor)}'")
    assert {r["Id"] for r in rows} == touched and all(r["SyncToken"] == "1" for r in rows)


def test_attachable_note_and_requestid_replay(fresh: Client) -> None:
    customer = next(c for c in fresh.server.company.qbo_customers.values() if c.is_job)
    body = {
        "Note": "Fulcrum flagged CO 7 for executive review",
        "AttachableRef": [{"EntityRef": {"type": "Customer", "value": customer.id}}],
    }
    first = fresh.qbo("POST", REALM + "/attachable", json=body, params={"requestid": "r-1"})
    assert first.status_code == 200 and first.json()["Attachable"]["Note"] == body["Note"]
    again = fresh.qbo("POST", REALM + "/attachable", json=body, params={"requestid": "r-1"})
    assert again.json()["Attachable"]["Id"] == first.json()["Attachable"]["Id"]
    [note] = fresh.server.notes
    assert (
        note["system"] == "quickbooks" and note["target"] == customer.id and note["idempotency_key"] == "r-1"
    )
    body["AttachableRef"][0]["EntityRef"]["value"] = "999999"
    assert _fault(fresh.qbo("POST", REALM + "/attachable", json=body))["code"] == "2500"
    assert len(fresh.server.notes) == 1
