# ruff: noqa: S608 - QuickBooks query language, not SQL
"""Full paged reads through the HTTP API, the way a connector would do them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from .conftest import Client

ALL_HS_PROPS = [
    "name",
    "domain",
    "hubspot_owner_id",
    "contract_renewal_date",
    "createdate",
    "hs_lastmodifieddate",
]


def hubspot_all(client: Client, since_ms: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after: str | None = "0"
    while after is not None:
        body = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(since_ms)}
                    ]
                }
            ],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ALL_HS_PROPS,
            "limit": 200,
            "after": after,
        }
        resp = client.hubspot("POST", "/crm/v3/objects/companies/search", json=body)
        assert resp.status_code == 200, resp.text
        page = json.loads(resp.content, parse_float=Decimal)
        out += page["results"]
        after = page.get("paging", {}).get("next", {}).get("after")
    return out


def qbo_all(client: Client, entity: str, where: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = 1
    while True:
        resp = client.query(f"SELECT * FROM {entity} {where} STARTPOSITION {start} MAXRESULTS 1000")
        assert resp.status_code == 200, resp.text
        rows = json.loads(resp.content, parse_float=Decimal)["QueryResponse"].get(entity, [])
        out += rows
        if len(rows) < 1000:
            return out
        start += 1000


def procore_all(client: Client, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    url: str | None = path
    while url is not None:
        resp = client.procore("GET", url)
        assert resp.status_code == 200, resp.text
        out += resp.json()
        url = resp.links.get("next", {}).get("url")
    return out
