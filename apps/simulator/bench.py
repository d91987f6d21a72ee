"""Measure generation time and full-sync page rates: ``python -m apps.simulator.bench --scale 17``.

Needs ``requests`` (a dev dependency), unlike the simulator itself."""

from __future__ import annotations

import argparse
import time

import requests

from .generator import generate_company
from .records import PROCORE_COMPANY_ID, REALM_ID
from .server import SimulatorServer
from .state import DEFAULT_TOKENS


def _qbo_pages(session: requests.Session, base: str) -> int:
    pages, start = 0, 1
    headers = {"Authorization": f"Bearer {DEFAULT_TOKENS['quickbooks']}"}
    while True:
        query = f"SELECT * FROM Invoice STARTPOSITION {start} MAXRESULTS 1000"  # noqa: S608 - not SQL
        resp = session.get(f"{base}/v3/company/{REALM_ID}/query", params={"query": query}, headers=headers)
        resp.raise_for_status()
        pages += 1
        if len(resp.json()["QueryResponse"].get("Invoice", [])) < 1000:
            return pages
        start += 1000


def _procore_pages(session: requests.Session, base: str) -> int:
    pages = 0
    url: str | None = f"{base}/rest/v1.0/projects?company_id={PROCORE_COMPANY_ID}&per_page=1000"
    headers = {
        "Authorization": f"Bearer {DEFAULT_TOKENS['procore']}",
        "Procore-Company-Id": str(PROCORE_COMPANY_ID),
    }
    while url:
        resp = session.get(url, headers=headers)
        resp.raise_for_status()
        resp.json()
        pages += 1
        url = resp.links.get("next", {}).get("url")
    return pages


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=17.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    for scale in sorted({1.0, args.scale}):
        started = time.perf_counter()
        company = generate_company(seed=args.seed, scale=scale)
        print(f"generate scale={scale:g}: {time.perf_counter() - started:.2f} s")
    with SimulatorServer(company).start() as server, requests.Session() as session:
        for name, run in (("QBO Invoice", _qbo_pages), ("Procore change orders", _procore_pages)):
            run(session, server.base_url)  # warm the sorted views
            started = time.perf_counter()
            pages = run(session, server.base_url)
            elapsed = time.perf_counter() - started
            print(f"{name}: {pages} pages of 1000 in {elapsed:.2f} s = {pages / elapsed:.1f} pages/s")


if __name__ == "__main__":
    main()
