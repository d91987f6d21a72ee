"""Escalation policies at run time: the frozen snapshot, business-hours clocks, fenced steps, the auditor.

An escalation freezes its route's policy when it opens (:func:`policy_start`). From then on it carries
the next step's due time (``next_step_at``) and a fencing token (``step_token``). The beat sweeper claims
due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` and queues one task per step carrying
(escalation id, step number, token); a step applies only through a conditional
``UPDATE ... WHERE step_token = <token> AND policy_step = <step>``, so a duplicate or late task changes
nothing (the same idea as Grafana OnCall's ``active_escalation_id``). A claim is a short lease: a task
lost with its worker is re-queued by a later sweep with the same token.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Func, IntegerField, Prefetch, Q
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from apps.audit.services import audit_record

from . import actions
from .models import Escalation, EscalationPolicy, PolicyLevel

if TYPE_CHECKING:
    from .noise import Notice

logger = logging.getLogger(__name__)

ACTOR = "system:policy"
# A bound on the business-hours walk: a policy with no business day would otherwise never end.
_MAX_DAYS = 3660


@dataclass(frozen=True)
class BusinessHours:
    """Business days (ISO weekdays) and hours in one time zone; adds business time to an instant."""

    days: frozenset[int]
    start: int
    end: int
    tz: zoneinfo.ZoneInfo

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> BusinessHours:
        hours = snapshot.get("business_hours") or {}
        return cls(
            days=frozenset(hours.get("days") or range(1, 8)),
            start=int(hours.get("start", 0)),
            end=int(hours.get("end", 24)),
            tz=zoneinfo.ZoneInfo(hours.get("timezone") or settings.TIME_ZONE),
        )

    def add(self, start: dt.datetime, hours: Decimal) -> dt.datetime:
        """The instant ``hours`` business hours after ``start`` (Friday 16:00 + 4h, 8–17 → Monday 11:00).

        Arithmetic is on local wall-clock times, so a DST change moves opening hours with the clock.
        """
        remaining = dt.timedelta(hours=float(hours))
        local = start.astimezone(self.tz)
        day = local.date()
        for _ in range(_MAX_DAYS):
            if day.isoweekday() in self.days:
                midnight = dt.datetime.combine(day, dt.time(), tzinfo=self.tz)
                opens = midnight + dt.timedelta(hours=self.start)
                closes = midnight + dt.timedelta(hours=self.end)
                begin = max(local, opens)
                if begin < closes:
                    available = closes - begin
                    if remaining <= available:
                        return (begin + remaining).astimezone(dt.UTC)
                    remaining -= available
            day += dt.timedelta(days=1)
            local = dt.datetime.combine(day, dt.time(), tzinfo=self.tz)
        raise ValueError("business hours never reach the wait: no business day in ten years")


@dataclass(frozen=True)
class DueStep:
    """A claimed step: what a task carries."""

    escalation_id: int
    step: int
    token: str


@dataclass(frozen=True)
class _Plan:
    due: dt.datetime
    kind: str  # "level" or "reminder"
    index: int


def policy_for_route(route: str) -> EscalationPolicy | None:
    """The route's policy, else the default policy (empty route), with levels and groups loaded."""
    return policies_for_routes([route])[route]


def policies_for_routes(routes: Iterable[str]) -> dict[str, EscalationPolicy | None]:
    """:func:`policy_for_route` for several routes in one query (and one for the levels)."""
    wanted = set(routes)
    levels = Prefetch("levels", queryset=PolicyLevel.objects.select_related("group").order_by("position"))
    found = {
        p.route: p for p in EscalationPolicy.objects.filter(route__in=[*wanted, ""]).prefetch_related(levels)
    }
    return {route: found.get(route) or found.get("") for route in wanted}


def policy_snapshot(policy: EscalationPolicy) -> dict[str, Any]:
    """The policy as JSON, frozen on an escalation."""
    return {
        "id": policy.pk,
        "name": policy.name,
        "route": policy.route,
        "business_hours": {
            "days": sorted({int(d) for d in policy.business_days.split(",") if d}),
            "start": policy.day_start,
            "end": policy.day_end,
            "timezone": policy.timezone or settings.TIME_ZONE,
        },
        "digest_executives": policy.digest_executives,
        "levels": [
            {
                "position": level.position,
                "wait_hours": str(level.wait_hours),
                "condition": level.condition,
                "target": level.target,
                "group_id": level.group_id,
                "group": level.group.name if level.group else "",
                "address": level.address,
                "repeat_hours": None if level.repeat_hours is None else str(level.repeat_hours),
                "max_repeats": level.max_repeats,
            }
            for level in policy.levels.all()
        ],
    }


def _plan(escalation: Escalation) -> _Plan | None:
    """The next step: the next level, or a reminder of the last level that fired, whichever is first."""
    snapshot = escalation.policy_snapshot or {}
    levels = snapshot.get("levels") or []
    if not levels:
        return None
    hours = BusinessHours.from_snapshot(snapshot)
    plans: list[_Plan] = []
    if escalation.policy_level < len(levels):
        wait = Decimal(levels[escalation.policy_level]["wait_hours"])
        plans.append(_Plan(hours.add(escalation.opened_at, wait), "level", escalation.policy_level))
    last = escalation.policy_level - 1
    if last >= 0 and escalation.policy_level_at is not None:
        level = levels[last]
        if level.get("repeat_hours") and escalation.policy_reminders < int(level.get("max_repeats") or 0):
            every = Decimal(level["repeat_hours"])
            due = hours.add(escalation.policy_level_at, every * (escalation.policy_reminders + 1))
            plans.append(_Plan(due, "reminder", last))
    # On a tie the level goes first: it supersedes the previous level's reminders.
    return min(plans, key=lambda p: (p.due, p.kind != "level")) if plans else None


def condition_holds(condition: str, status: str) -> bool:
    if status not in Escalation.OPEN_STATES:
        return False
    if condition == PolicyLevel.Condition.NOT_ACKNOWLEDGED:
        return status == Escalation.Status.OPEN
    return True


def policy_start(*, escalation: Escalation, now: dt.datetime) -> None:
    """Freeze the route's policy on a new escalation and schedule its first step (caller's transaction)."""
    if policies_freeze([escalation]):
        escalation.save(update_fields=["policy", "policy_snapshot", "next_step_at", "step_token"])


def policies_freeze(escalations: Sequence[Escalation]) -> list[Escalation]:
    """Set each escalation's frozen policy and first step in memory (the caller saves or inserts them);
    returns the escalations that have a policy. Policies are read once for all routes."""
    policies = policies_for_routes({e.route for e in escalations})
    snapshots: dict[int, dict[str, Any]] = {}
    frozen = []
    for escalation in escalations:
        policy = policies[escalation.route]
        if policy is None:
            continue
        if policy.pk not in snapshots:
            snapshots[policy.pk] = policy_snapshot(policy)
        escalation.policy = policy
        escalation.policy_snapshot = snapshots[policy.pk]
        plan = _plan(escalation)
        escalation.next_step_at = plan.due if plan else None
        escalation.step_token = uuid.uuid4() if plan else None
        frozen.append(escalation)
    return frozen


def level_notices(escalation: Escalation, level: dict[str, Any], step: int) -> list[Notice]:
    """The notifications one level (or its reminder) sends, keyed per step so a step sends once."""
    from .noise import Notice

    action = actions.for_policy_target(level["target"])
    targets = action.level_targets(escalation, level)
    return [Notice(action.name, t, f"esc{escalation.pk}:s{step}:{action.name}:{t}"[:120]) for t in targets]


def policy_claim_due(*, now: dt.datetime | None = None, limit: int | None = None) -> list[DueStep]:
    """Claim due steps for a short lease. Rows another sweeper holds are skipped, not waited for."""
    now = now or timezone.now()
    limit = limit or settings.FULCRUM["POLICY_SWEEP_BATCH"]
    with transaction.atomic():
        rows = list(
            Escalation.objects.select_for_update(skip_locked=True)
            .filter(status__in=Escalation.OPEN_STATES, next_step_at__lte=now, step_token__isnull=False)
            .filter(Q(step_claimed_until__isnull=True) | Q(step_claimed_until__lt=now))
            .order_by("next_step_at")
            .values_list("pk", "policy_step", "step_token")[:limit]
        )
        if rows:
            Escalation.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
                step_claimed_until=now + settings.FULCRUM["POLICY_STEP_LEASE"]
            )
    return [DueStep(pk, step, str(token)) for pk, step, token in rows]


def policy_release_closed() -> int:
    """Closed escalations have no further steps: clear what a close left scheduled."""
    return (
        Escalation.objects.exclude(status__in=Escalation.OPEN_STATES)
        .filter(next_step_at__isnull=False)
        .update(next_step_at=None, step_token=None, step_claimed_until=None)
    )


@transaction.atomic
def policy_step_apply(*, escalation_id: int, step: int, token: str, now: dt.datetime | None = None) -> str:
    """Apply one step if the row still carries this step and token. Returns what happened."""
    from .noise import notify
    from .services import _event

    now = now or timezone.now()
    escalation = Escalation.objects.select_for_update().filter(pk=escalation_id).first()
    if escalation is None or str(escalation.step_token) != token or escalation.policy_step != step:
        return "stale"
    fence = Escalation.objects.filter(pk=escalation_id, step_token=token, policy_step=step)
    if not escalation.is_open:
        fence.update(next_step_at=None, step_token=None, step_claimed_until=None)
        return "closed"
    plan = _plan(escalation)
    if plan is None:
        fence.update(next_step_at=None, step_token=None, step_claimed_until=None)
        return "done"
    if plan.due > now:
        return "not-due"
    level = escalation.policy_snapshot["levels"][plan.index]
    holds = condition_holds(level["condition"], escalation.status)
    if plan.kind == "level":
        escalation.policy_level = plan.index + 1
        escalation.policy_reminders = 0
        escalation.policy_level_at = now if holds else None
        kind = "policy_level" if holds else "policy_level_skipped"
    else:
        if holds:
            escalation.policy_reminders += 1
        else:
            escalation.policy_level_at = None
        kind = "policy_reminder" if holds else "policy_reminders_stopped"
    escalation.policy_step = step + 1
    following = _plan(escalation)
    updated = fence.update(
        policy_step=escalation.policy_step,
        policy_level=escalation.policy_level,
        policy_reminders=escalation.policy_reminders,
        policy_level_at=escalation.policy_level_at,
        next_step_at=following.due if following else None,
        step_token=uuid.uuid4() if following else None,
        step_claimed_until=None,
    )
    if updated != 1:  # unreachable under the row lock; the fence is the contract, the lock the means
        return "stale"
    notices = level_notices(escalation, level, step) if holds else []
    queued = notify(escalation=escalation, notices=notices, now=now, new=False) if notices else []
    why = "" if holds else f"condition {level['condition'].replace('_', ' ')} no longer holds"
    if holds and not notices:
        why = "no target"
    _event(
        escalation,
        kind,
        ACTOR,
        "system",
        note=why,
        at=now,
        step=step,
        level=level["position"],
        reminder=escalation.policy_reminders if plan.kind == "reminder" else 0,
        targets=[n.target for n in notices],
        sent_now=len(queued),
    )
    return kind


@transaction.atomic
def policy_audit(*, now: dt.datetime | None = None) -> int:
    """Report open escalations whose policy stalled: a step overdue past the grace period, or levels
    left with nothing scheduled. Logs a warning and appends one audit entry; returns the count."""
    now = now or timezone.now()
    grace: dt.timedelta = settings.FULCRUM["POLICY_STALL_AFTER"]
    open_ = Escalation.objects.filter(status__in=Escalation.OPEN_STATES)
    overdue = list(
        open_.filter(next_step_at__lt=now - grace).order_by("next_step_at").values_list("pk", flat=True)[:200]
    )
    levels = Func(
        KeyTransform("levels", "policy_snapshot"), function="jsonb_array_length", output_field=IntegerField()
    )
    stuck = list(
        open_.filter(next_step_at__isnull=True)
        .annotate(level_count=levels)
        .filter(level_count__gt=F("policy_level"))
        .order_by("pk")
        .values_list("pk", flat=True)[:200]
    )
    count = len(overdue) + len(stuck)
    if count:
        logger.warning(
            "%d stalled escalation policies; overdue: %s; nothing scheduled: %s (first 20 of each)",
            count,
            overdue[:20],
            stuck[:20],
        )
        audit_record(
            action="escalation.policy_stalled",
            actor="system:policy-auditor",
            object_type="escalation",
            data={"overdue": overdue, "unscheduled": stuck, "grace_seconds": int(grace.total_seconds())},
        )
    return count
