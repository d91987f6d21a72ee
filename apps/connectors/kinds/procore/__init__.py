"""Procore: projects and vendors (company lists), milestones, change orders and submittals (per project).

The endpoints, fields and enums used, and the doc page each comes from, are in ``docs/vendors/procore.md``.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import requests
from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter

from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.kinds.base import ConnectorKind, FieldMapping, Record, Stream
from apps.connectors.webhooks.schemes import Events, Headers, Inbound, body_hash

from . import webhooks
from .streams import (
    ChangeOrders,
    CompanyList,
    Milestones,
    ProjectList,
    Projects,
    Submittals,
    Vendors,
    reader_count,
)

# Seconds past X-Rate-Limit-Reset before calling again ("pause requests until after" the reset), by a
# clock that agrees with Procore's to within the second its Date header names.
RESET_MARGIN = 0.25


def rate_limit_pause(response: requests.Response, now: float | None = None) -> float | None:
    """How long to pause before the next call, from Procore's ``X-Rate-Limit-*`` headers; None to go on.

    Every answer reports the hourly or the 10-second spike limit, whichever the app is closer to
    exhausting: ``X-Rate-Limit-Limit``, ``-Remaining`` and ``-Reset`` (epoch seconds). At ``Remaining: 0``
    we wait until after the reset (developers.procore.com/documentation/rate-limiting,
    ``plan_your_app/rate_limiting.md``), measured on Procore's clock (:func:`procore_clock`). A 429 without
    those headers is left to the client's backoff.
    """
    remaining = str(response.headers.get("X-Rate-Limit-Remaining") or "").strip()
    reset = str(response.headers.get("X-Rate-Limit-Reset") or "").strip()
    if not remaining.isdigit() or int(remaining) > 0 or not reset.isdigit():
        return None
    now = procore_clock(response, time.time() if now is None else now)
    return max(0.0, int(reset) - now) + RESET_MARGIN


def procore_clock(response: requests.Response, now: float) -> float:
    """Procore's time at ``response``: ours while it reads within the second of the answer's ``Date``
    header, else that second's start, which is never later than Procore's clock ("measure from the
    response's Date header, not your server's clock, so clock drift can't skew the result",
    developers.procore.com/documentation/content/rate-limit-handling). Without a readable Date, ours."""
    try:
        stamp = email.utils.parsedate_to_datetime(str(response.headers.get("Date") or "")).timestamp()
    except (TypeError, ValueError):
        return now
    return now if stamp <= now < stamp + 1 else stamp


class Procore(ConnectorKind):
    kind = "procore"
    label = "Procore"
    receives_webhooks = True
    # Projects and vendors first: the others link to them.
    stream_classes: ClassVar[list[type[Stream]]] = [Projects, Vendors, Milestones, ChangeOrders, Submittals]
    field_mappings: ClassVar[tuple[FieldMapping, ...]] = (
        FieldMapping(
            "schedule_critical",
            "schedule_critical",
            "the submittal custom field flagging schedule-critical submittals: custom_field_<definition id> "
            "(or just the definition id) as List Submittals returns it under custom_fields",
        ),
    )
    token_url = "https://login.procore.com/oauth/token"  # noqa: S105 - a URL, not a secret
    token_basic_auth = False
    # The X-Rate-Limit-* headers of each answer pace the calls (rate_limit_pause) and hold this shared budget
    # for every worker; Procore says to take them as the truth, not an assumed fixed limit. The fixed window
    # is a backstop against runaway loops only (1,000 calls/s per tenant over Procore's 10-second spike
    # window): at 100 calls/s it was what bounded a full sync of the simulator (bench/procore_sync.py).
    rate_budget_default = (10_000, 10.0)
    # 16 of those calls reserved per Redis round trip: the project readers (options.concurrency, 8) make a
    # full sync's 30k calls, and one round trip each was a third of the client's time per call.
    rate_budget_lease = 16

    @classmethod
    def check_signature(cls, inbound: Inbound, secrets: list[str]) -> None:
        webhooks.verify(inbound, secrets)

    @classmethod
    def webhook_events(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
        return webhooks.events(payload, options, headers)

    @classmethod
    def webhook_event_id(cls, headers: Headers, body: bytes, payload: Any = None) -> str:
        return webhooks.event_id(payload) or body_hash(body)

    @property
    def company_id(self) -> str:
        return str(self.option("company_id"))

    def client(self) -> HttpClient:
        client = self.http({"Procore-Company-Id": self.company_id})
        client.pace = rate_limit_pause
        # One kept-alive connection per project reader: requests' default pool holds 10, and readers past
        # that opened and dropped a connection on every call (options.concurrency above 10).
        readers = reader_count(self)
        if readers > DEFAULT_POOLSIZE:
            for scheme in ("http://", "https://"):
                client.session.mount(scheme, HTTPAdapter(pool_connections=1, pool_maxsize=readers))
        return client

    def tenant(self) -> str:
        return f"{super().tenant()}/{self.company_id}"

    def fetch_records(
        self,
        client: HttpClient,
        stream: Stream,
        ids: Sequence[str],
        scopes: Mapping[str, str] | None = None,
    ) -> list[Record]:
        """The current records with these ids; ``scopes`` names the project of project-scoped ones (the
        webhook's ``project_id``). Ids with no known project are not asked for, so they are not "gone"."""
        wanted = sorted({int(i) for i in ids if str(i).isdigit()})
        if isinstance(stream, CompanyList):
            return stream.by_ids(client, wanted)
        assert isinstance(stream, ProjectList)
        by_project: dict[str, list[int]] = {}
        for record_id in wanted:
            project = (scopes or {}).get(str(record_id)) or self._known_project(stream, str(record_id))
            if project:
                by_project.setdefault(project, []).append(record_id)
        found: list[Record] = []
        for project, project_ids in sorted(by_project.items()):
            try:
                found += stream.by_ids(client, project, project_ids)
            except UpstreamError as exc:
                # A project-scoped list answers 404 when the project itself is gone (deleted upstream):
                # its records went with it, so none of them is found. Any other refusal stays an error.
                if exc.status != 404:
                    raise
        return found

    def _known_project(self, stream: Stream, external_id: str) -> str:
        """The project of a record we already hold (an event that named no project)."""
        row = (
            stream.model._default_manager.filter(source=self.connection, external_id=external_id)
            .values_list("project_ref", flat=True)
            .first()
        )
        return str(row or "")
