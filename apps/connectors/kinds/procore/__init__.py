"""Procore: projects, vendors, milestones, change orders, submittals (company-level list endpoints)."""

from __future__ import annotations

from typing import ClassVar

from apps.connectors.http import HttpClient
from apps.connectors.kinds.base import ConnectorKind, Stream

from .streams import ChangeOrders, Milestones, Projects, Submittals, Vendors


class Procore(ConnectorKind):
    kind = "procore"
    # Projects and vendors first: the others link to them.
    stream_classes: ClassVar[list[type[Stream]]] = [Projects, Vendors, Milestones, ChangeOrders, Submittals]

    @property
    def company_id(self) -> str:
        return str(self.option("company_id"))

    def client(self) -> HttpClient:
        return HttpClient(
            self.connection.base_url, headers={**self.auth_headers(), "Procore-Company-Id": self.company_id}
        )
