"""Read-side queries for one escalation's page and an account manager's queue (the dashboard reads
``apps.dashboard.queries``). Every value shown in words goes through the one formatter,
``apps.rules.engine.wording``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Case, IntegerField, Value, When

from apps.entities.models import ChangeOrder
from apps.rules.engine.wording import reading

from .models import Delivery, Escalation, EscalationEvent, EscalationQuerySet

# critical > high > medium > low, as Escalation.SEVERITY_RANK, computable in SQL.
SEVERITY_RANK = Case(
    *(When(severity=name, then=Value(rank)) for name, rank in Escalation.SEVERITY_RANK.items()),
    default=Value(len(Escalation.SEVERITY_RANK)),
    output_field=IntegerField(),
)
OPEN_FIRST = Case(
    When(status__in=Escalation.OPEN_STATES, then=Value(0)), default=Value(1), output_field=IntegerField()
)


def escalation_for_page(user: Any, pk: int) -> Escalation | None:
    """One escalation the user may see, with everything its page shows from related rows."""
    return (
        Escalation.objects.visible_to(user)
        .select_related("rule", "rule_version", "client__owner", "project", Escalation.EVIDENCE)
        .filter(pk=pk)
        .first()
    )


@dataclass(frozen=True)
class TimelineEntry:
    at: dt.datetime
    kind: str  # "event" | "delivery"
    item: EscalationEvent | Delivery


def timeline(escalation: Escalation) -> list[TimelineEntry]:
    """The escalation's events and outbox deliveries, oldest first, in two queries."""
    entries = [TimelineEntry(e.created_at, "event", e) for e in escalation.events.all()]
    entries += [TimelineEntry(d.created_at, "delivery", d) for d in escalation.deliveries.all()]
    entries.sort(key=lambda entry: (entry.at, entry.kind != "event", entry.item.pk))
    return entries


@dataclass(frozen=True)
class ChannelStatus:
    """Where one action (email the account manager, a CRM note, ...) stands across its targets."""

    action: str
    targets: int
    by_state: dict[str, int]
    last_error: str

    @property
    def delivered(self) -> int:
        return self.by_state.get(Delivery.State.DELIVERED, 0)

    @property
    def waiting(self) -> int:
        return self.by_state.get(Delivery.State.PENDING, 0) + self.by_state.get(Delivery.State.SENDING, 0)

    @property
    def failed(self) -> int:
        return self.by_state.get(Delivery.State.FAILED, 0)

    @property
    def dead(self) -> int:
        return self.by_state.get(Delivery.State.DEAD, 0)

    @property
    def settled(self) -> bool:
        return self.delivered == self.targets


def delivery_channels(entries: list[TimelineEntry]) -> list[ChannelStatus]:
    """Per-action delivery status from the timeline's deliveries (already fetched: no query)."""
    grouped: dict[str, list[Delivery]] = {}
    for entry in entries:
        if isinstance(entry.item, Delivery):
            grouped.setdefault(entry.item.action, []).append(entry.item)
    channels = []
    for action, deliveries in grouped.items():
        counts: dict[str, int] = {}
        for delivery in deliveries:
            counts[delivery.state] = counts.get(delivery.state, 0) + 1
        errors = [d.last_error for d in deliveries if d.last_error and d.state != Delivery.State.DELIVERED]
        channels.append(ChannelStatus(action, len(deliveries), counts, errors[-1] if errors else ""))
    return channels


def my_escalations(user: Any, status: str = "") -> EscalationQuerySet:
    """The account manager's own escalations (clients they own): open first, worst first, newest first."""
    qs = Escalation.objects.visible_to(user).filter(client__owner__user=user)
    if status:
        qs = qs.filter(status=status)
    return (
        qs.select_related("rule", "client", "project", Escalation.EVIDENCE)
        .annotate(open_first=OPEN_FIRST, rank=SEVERITY_RANK)
        .order_by("open_first", "rank", "-last_fired_at", "-pk")
    )


@dataclass(frozen=True)
class DecisionFacts:
    """What an approver confirms: the change order as the PM system has it now, and as it was flagged."""

    number: str
    title: str
    status: str
    amount: str  # formatted, with its unit; "no data" when the change order is gone
    flagged_amount: str  # the amount in the escalation's evidence, formatted

    @property
    def amount_changed(self) -> bool:
        return self.flagged_amount != "no data" and self.amount != self.flagged_amount


def decision_facts(escalation: Escalation) -> DecisionFacts | None:
    """The change order behind an escalation, for the approve/reject confirmation (None for others)."""
    if escalation.subject_type != "change_order":
        return None
    facts = escalation.evidence.get("facts") if isinstance(escalation.evidence, dict) else None
    fact = facts.get("change_order.amount") if isinstance(facts, dict) else None
    fact = fact if isinstance(fact, dict) else {}
    unit = str(fact.get("unit") or "USD")
    co = (
        ChangeOrder.objects.filter(pk=escalation.subject_id)
        .only("number", "title", "status", "amount")
        .first()
    )
    return DecisionFacts(
        number=co.number if co else "",
        title=co.title if co else "",
        status=co.get_status_display() if co else "no longer in the PM system",
        amount=reading(co.amount if co else None, kind="money", unit=unit),
        flagged_amount=reading(fact.get("value"), kind="money", unit=unit),
    )
