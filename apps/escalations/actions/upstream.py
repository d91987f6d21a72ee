"""Actions that write to a vendor or a customer's endpoint: notes in the CRM and accounting systems, an RFI
and a change order's decision in the PM system, outbound webhooks. They run on the ``writeback`` queue.

Upstream writes are retried by the outbox and only there: the HTTP client sends a write once unless it never
left (``apps.connectors.http``), so a lost answer costs one outbox attempt and the next one looks before
writing (:func:`outcome_may_exist`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db.models import prefetch_related_objects

from apps.connectors.http import UpstreamPermanent
from apps.connectors.kinds import get_kind
from apps.connectors.models import Connection
from apps.entities.models import SourceObject
from apps.errors import Permanent
from apps.rules.engine.wording import why

from .. import outbound
from ..models import Delivery, Escalation
from .base import Action


def upstream_call(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run an upstream call. A transient failure (timeouts, unreachable, 5xx, 429) passes as it is, with
    the vendor's Retry-After or rate-limit reset; a refusal is recorded with its status and body."""
    try:
        return call()
    except UpstreamPermanent as exc:
        raise Permanent(f"upstream refused: HTTP {exc.status}: {exc.body or exc}") from exc


def note_text(escalation: Escalation) -> str:
    return (
        f"Fulcrum escalation #{escalation.pk} ({escalation.severity}, route {escalation.route}): "
        f"{escalation.rule.name} — {escalation.subject_label}. "
        f"Why: {why(escalation.evidence, escalation.summary)}. "
        f"{settings.SITE_URL}/escalations/{escalation.pk}/"
    )


def outcome_may_exist(delivery: Delivery) -> bool:
    """Whether an earlier attempt of this row may already have acted upstream, so a write without an
    idempotency key must look for its result first: any attempt after the first (the HTTP client never
    resends a write whose outcome is unknown, so the first retry after a cut 2xx is the outbox's), and the
    first attempt of a replayed row, which keeps its last error while its count starts again."""
    return delivery.attempts > 1 or bool(delivery.last_error)


class UpstreamAction(Action):
    queue = "writeback"


class ClientNote(UpstreamAction):
    """A note on the client's record in a connected system; targets are ``<connection id>:<record id>``."""

    rule_action = True

    def target_words(self, target: str, escalation: Escalation | None) -> str:
        client = getattr(escalation, "client", None)
        return str(client.name) if client is not None else target

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        connection_id, _, record_id = delivery.target.partition(":")
        connection = Connection.objects.get(pk=int(connection_id))
        kind = get_kind(connection)
        text = note_text(delivery.escalation)
        result = upstream_call(
            lambda: kind.write_note(
                record_id, text, idempotency_key=delivery.idempotency_key, retry=outcome_may_exist(delivery)
            )
        )
        return result if isinstance(result, dict) else {"result": str(result)}


class NoteCrm(ClientNote):
    name = "note_crm"
    words = "Note in CRM"

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        found = []
        for escalation in escalations:
            client = escalation.client
            found.append([f"{client.source_id}:{client.external_id}"] if client else [])
        return found


class NoteAccounting(ClientNote):
    name = "note_accounting"
    words = "Note in accounting"

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        """Every accounting customer linked to the client (one query for all the escalations)."""
        client_ids = {e.client_id for e in escalations if e.client_id is not None}
        links: dict[int, list[str]] = defaultdict(list)
        if client_ids:
            for client_id, connection_id, external_id in (
                SourceObject.objects.filter(
                    client_id__in=client_ids, object_type="customer", deleted_at__isnull=True
                )
                .order_by("pk")
                .values_list("client_id", "connection_id", "external_id")
            ):
                links[client_id].append(f"{connection_id}:{external_id}")
        return [list(links.get(e.client_id, [])) if e.client_id is not None else [] for e in escalations]


class EscalatePm(UpstreamAction):
    """An RFI on the project in the PM system (Procore), carrying the row's idempotency key."""

    name = "escalate_pm"
    words = "RFI in the PM system"
    rule_action = True

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        projects = [e.project for e in escalations if e.project is not None]
        if len(projects) > 1:
            prefetch_related_objects(projects, "source")
        return [outbound.pm_targets(e) for e in escalations]

    def target_words(self, target: str, escalation: Escalation | None) -> str:
        project = getattr(escalation, "project", None)
        return f"{project.number} {project.name}".strip() if project is not None else target

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        escalation = delivery.escalation
        return upstream_call(
            lambda: outbound.procore_create_rfi(
                escalation=escalation,
                target=delivery.target,
                idempotency_key=delivery.idempotency_key,
                text=note_text(escalation),
            )
        )


WRITEBACK_ACTION = "approval_writeback"


class ApprovalWriteback(UpstreamAction):
    """An executive's approve/reject of a change order, written back to the PM system."""

    name = WRITEBACK_ACTION
    words = "Decision written back to the PM system"

    def target_words(self, target: str, escalation: Escalation | None) -> str:
        return str(getattr(escalation, "subject_label", "") or target)

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        outcome = delivery.escalation.outcome
        if outcome not in (Escalation.Outcome.APPROVED, Escalation.Outcome.REJECTED):
            raise Permanent(f"escalation outcome is {outcome!r}, not an approval decision")
        return upstream_call(
            lambda: outbound.procore_set_change_order_status(
                target=delivery.target, status=str(outcome), idempotency_key=delivery.idempotency_key
            )
        )


class Webhook(UpstreamAction):
    """A signed Standard Webhooks POST to every configured endpoint (``FULCRUM_OUTBOUND_WEBHOOKS``)."""

    name = "webhook"
    words = "Webhook"
    rule_action = True

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        names = outbound.webhook_targets()
        return [list(names) for _ in escalations]

    def target_words(self, target: str, escalation: Escalation | None) -> str:
        return f"endpoint “{target}”"

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        # Its failures are the shared vocabulary already (UnsafeDestination is Permanent).
        return outbound.webhook_send(
            escalation=delivery.escalation,
            endpoint_name=delivery.target,
            idempotency_key=delivery.idempotency_key,
        )
