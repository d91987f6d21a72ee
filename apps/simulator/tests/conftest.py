from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import requests

from apps.simulator import PROCORE_COMPANY_ID, TOKENS, Company, SimulatorServer, generate_company

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def make_company(scale: float = 0.1, seed: int = 42) -> Company:
    return generate_company(seed=seed, scale=scale, today=TODAY, now=NOW)


class Client:
    """A requests session that speaks to one simulator with each vendor's credentials."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.base = server.base_url
        self.session = requests.Session()

    def hubspot(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKENS['hubspot']}", **kw.pop("headers", {})}
        return self.session.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def qbo(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {TOKENS['quickbooks']}",
            "Accept": "application/json",
            **kw.pop("headers", {}),
        }
        return self.session.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def query(self, text: str) -> requests.Response:
        return self.qbo(
            "GET", "/v3/company/9130350000000001/query", params={"query": text, "minorversion": "75"}
        )

    def procore(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {TOKENS['procore']}",
            "Procore-Company-Id": str(PROCORE_COMPANY_ID),
            **kw.pop("headers", {}),
        }
        url = path if path.startswith("http") else self.base + path
        return self.session.request(method, url, headers=headers, timeout=10, **kw)


@pytest.fixture(scope="session")
def shared_company() -> Company:
    """Read-only company shared by tests that never change data."""
    return make_company(scale=0.3)


@pytest.fixture(scope="session")
def shared_server(shared_company: Company) -> Iterator[SimulatorServer]:
    with SimulatorServer(shared_company) as server:
        yield server


@pytest.fixture
def client(shared_server: SimulatorServer) -> Iterator[Client]:
    shared_server.faults.clear()
    yield Client(shared_server)
    shared_server.faults.clear()


@pytest.fixture
def fresh() -> Iterator[Client]:
    """A private small company and server for tests that mutate, delete, write back or inject faults."""
    with SimulatorServer(make_company(scale=0.1)) as server:
        yield Client(server)
