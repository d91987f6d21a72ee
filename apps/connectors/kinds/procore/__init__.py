"""Procore: projects, vendors, milestones, change orders, submittals (company-level list endpoints)."""

from __future__ import annotations

from typing import ClassVar

from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.kinds.base import ConnectorKind, Record, Stream

from .streams import PER_PAGE, ChangeOrders, ListStream, Milestones, Projects, Submittals, Vendors


class Procore(ConnectorKind):
    kind = "procore"
    # Projects and vendors first: the others link to them.
    stream_classes: ClassVar[list[type[Stream]]] = [Projects, Vendors, Milestones, ChangeOrders, Submittals]
    token_url = "https://login.procore.com/oauth/token"  # noqa: S105 - a URL, not a secret
    token_basic_auth = False
    # 3,600 calls per rolling hour; a ten-minute window of a sixth of it never exceeds that.
    rate_budget_default = (600, 600.0)

    @property
    def company_id(self) -> str:
        return str(self.option("company_id"))

    def client(self) -> HttpClient:
        return self.http({"Procore-Company-Id": self.company_id})

    def tenant(self) -> str:
        return f"{super().tenant()}/{self.company_id}"

    def fetch_records(self, client: HttpClient, stream: Stream, ids: list[str]) -> list[Record]:
        """The current records with these ids (the stream's list endpoint with ``filters[id][]``)."""
        assert isinstance(stream, ListStream)
        path = stream.path.format(company=self.company_id)
        found: list[Record] = []
        wanted = sorted({int(i) for i in ids if str(i).isdigit()})
        for start in range(0, len(wanted), 100):
            params = {
                **stream.query_params(),
                "filters[id][]": wanted[start : start + 100],
                "per_page": PER_PAGE,
            }
            data, _ = client.request_json("GET", path, params=params)
            if not isinstance(data, list):
                raise UpstreamError(
                    f"GET {path}: answered {type(data).__name__}, expected a list", status=200
                )
            found += data
        return found
