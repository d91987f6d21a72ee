"""What Fulcrum learned: the four lessons of the seed, measured from outcomes.

1. Which rules (escalation types) end in action versus false alarm: per rule, its labelled escalations
   (the same labels as everywhere: ``apps.learning.cases``), the share acted on with a 95% Wilson
   interval, and the false-alarm share.
2. Which routes and which approvers are fastest: time from opening to a person's close, p50/p90 per
   route and per person who closed (``percentile_cont``; means mislead on long tails).
3. Which client traits go with project success: for each trait, projects with and without it, the
   share that achieved their margin (``project.margin_pct`` ≥ ``MARGIN_TARGET``) and the share with no
   missed milestone, each with its count and Wilson interval — never a bare correlation.
4. Which thresholds perform best: every rule version with labelled escalations, its thresholds and its
   precision (Wilson interval), best first.

Every figure comes with the count it rests on; a share over fewer than ``MIN_COUNT`` is shown as too
few to say.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from django.db import connection

from apps.rules.evaluation.backtest import NEGATIVE, POSITIVE

MARGIN_TARGET: Final = Decimal("15")
MIN_COUNT: Final = 5
Z95: Final = 1.959964


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None without observations."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Share:
    """``hits`` of ``n`` with its interval; ``enough`` says whether it is worth reading."""

    hits: int
    n: int

    @property
    def value(self) -> float | None:
        return self.hits / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.hits, self.n)

    @property
    def enough(self) -> bool:
        return self.n >= MIN_COUNT


@dataclass
class RuleLesson:
    rule_key: str
    rule_name: str
    escalations: int
    acted: Share
    false_alarms: Share


@dataclass
class Speed:
    key: str
    label: str
    n: int
    p50: float | None
    p90: float | None


@dataclass
class TraitLesson:
    trait: str
    with_trait: int
    without_trait: int
    margin_with: Share
    margin_without: Share
    on_time_with: Share
    on_time_without: Share


@dataclass
class ThresholdLesson:
    rule_key: str
    version: int
    thresholds: list[tuple[str, str, Any]]
    precision: Share
    live: bool


@dataclass
class Lessons:
    since: dt.datetime | None
    rules: list[RuleLesson] = field(default_factory=list)
    routes: list[Speed] = field(default_factory=list)
    approvers: list[Speed] = field(default_factory=list)
    traits: list[TraitLesson] = field(default_factory=list)
    thresholds: list[ThresholdLesson] = field(default_factory=list)
    projects_measured: int = 0


_RULES_SQL = """
SELECT r.key, r.name, COUNT(*),
       COUNT(*) FILTER (WHERE e.outcome = ANY(%(positive)s)),
       COUNT(*) FILTER (WHERE e.outcome = 'false_alarm'),
       COUNT(*) FILTER (WHERE e.outcome = ANY(%(labelled)s))
FROM escalations_escalation e JOIN rules_rule r ON r.id = e.rule_id
WHERE e.opened_at >= %(since)s
GROUP BY r.key, r.name
"""

_ROUTES_SQL = """
SELECT e.route, COUNT(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM e.closed_at - e.opened_at)),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM e.closed_at - e.opened_at))
FROM escalations_escalation e
WHERE e.closed_at IS NOT NULL AND e.outcome <> 'auto_resolved' AND e.opened_at >= %(since)s
GROUP BY e.route
"""

# The person who closed it: the closing event's actor (a user, not the system).
_APPROVERS_SQL = """
SELECT ev.actor, COUNT(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM ev.created_at - e.opened_at)),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM ev.created_at - e.opened_at))
FROM escalations_escalation e
JOIN escalations_escalationevent ev ON ev.escalation_id = e.id
WHERE ev.kind IN ('approved', 'rejected', 'resolved', 'dismissed') AND ev.actor LIKE 'user:%%'
  AND e.opened_at >= %(since)s
GROUP BY ev.actor
"""

_VERSIONS_SQL = """
SELECT r.key, v.number, v.spec, r.live_version_id = v.id,
       COUNT(*) FILTER (WHERE e.outcome = ANY(%(positive)s)),
       COUNT(*) FILTER (WHERE e.outcome = ANY(%(labelled)s))
FROM escalations_escalation e
JOIN rules_ruleversion v ON v.id = e.rule_version_id JOIN rules_rule r ON r.id = v.rule_id
WHERE e.opened_at >= %(since)s
GROUP BY r.key, v.number, v.spec, r.live_version_id, v.id
"""


def _speed(rows: list[tuple[Any, ...]], labels: dict[str, str] | None = None) -> list[Speed]:
    out = [
        Speed(
            str(key),
            (labels or {}).get(str(key), str(key)),
            n,
            None if p50 is None else float(p50),
            None if p90 is None else float(p90),
        )
        for key, n, p50, p90 in rows
    ]
    return sorted(out, key=lambda s: (s.p50 is None, s.p50 or 0.0))


def _thresholds(spec: dict[str, Any] | str) -> list[tuple[str, str, Any]]:
    from apps.rules.engine.evaluator import compile_condition

    if isinstance(spec, str):  # a raw cursor hands jsonb over as text under Django's psycopg setup
        spec = json.loads(spec)
    assert isinstance(spec, dict)
    try:
        condition = compile_condition(spec["when"], spec["subject"])
    except Exception:  # an old version the catalogue no longer reads: no thresholds shown
        return []
    return [(fact, op, value) for _, fact, op, value in condition.walk() if op in ("lt", "lte", "gt", "gte")]


def _traits(lessons: Lessons) -> None:
    """Client traits against project success, from each live project's current facts."""
    from apps.entities.models import Project
    from apps.rules.evaluation.facts import compute_contexts

    facts = {
        c.subject_id: c.values
        for c in compute_contexts("project")
        if c.values.get("project.margin_pct") is not None
    }
    if not facts:
        return
    lessons.projects_measured = len(facts)
    projects = Project.objects.filter(pk__in=list(facts)).select_related("client")
    per_client: dict[int, int] = {}
    rows = list(projects.values_list("pk", "client_id", "contract_value", "client__renewal_date"))
    for _, client_id, _, _ in rows:
        if client_id is not None:
            per_client[client_id] = per_client.get(client_id, 0) + 1
    today = dt.datetime.now(dt.UTC).date()
    traits: dict[str, list[tuple[bool, bool, bool]]] = {
        "repeat client (2 or more projects)": [],
        "contract of $1,000,000 or more": [],
        "client renewal due within 90 days": [],
    }
    for pk, client_id, value, renewal in rows:
        values = facts[pk]
        margin = Decimal(str(values["project.margin_pct"]))
        missed = values.get("project.milestones_missed")
        success = (margin >= MARGIN_TARGET, missed is not None and int(str(missed)) == 0)
        has = {
            "repeat client (2 or more projects)": per_client.get(client_id or -1, 0) >= 2,
            "contract of $1,000,000 or more": value is not None and value >= Decimal(1_000_000),
            "client renewal due within 90 days": renewal is not None and 0 <= (renewal - today).days <= 90,
        }
        for trait, present in has.items():
            traits[trait].append((present, *success))
    for trait, entries in traits.items():
        yes = [e for e in entries if e[0]]
        no = [e for e in entries if not e[0]]
        lessons.traits.append(
            TraitLesson(
                trait=trait,
                with_trait=len(yes),
                without_trait=len(no),
                margin_with=Share(sum(e[1] for e in yes), len(yes)),
                margin_without=Share(sum(e[1] for e in no), len(no)),
                on_time_with=Share(sum(e[2] for e in yes), len(yes)),
                on_time_without=Share(sum(e[2] for e in no), len(no)),
            )
        )


def lessons(*, since: dt.datetime | None = None) -> Lessons:
    """Everything the page shows; a fixed number of queries plus one pass over the projects' facts."""
    out = Lessons(since=since)
    params: dict[str, Any] = {
        "since": since or dt.datetime.min.replace(tzinfo=dt.UTC),
        "positive": list(POSITIVE),
        "labelled": list(POSITIVE + NEGATIVE),
    }
    with connection.cursor() as cursor:
        cursor.execute(_RULES_SQL, params)
        for key, name, n, acted, false_alarms, labelled in cursor.fetchall():
            out.rules.append(RuleLesson(key, name, n, Share(acted, labelled), Share(false_alarms, labelled)))
        cursor.execute(_ROUTES_SQL, params)
        out.routes = _speed(cursor.fetchall())
        cursor.execute(_APPROVERS_SQL, params)
        approver_rows = cursor.fetchall()
        cursor.execute(_VERSIONS_SQL, params)
        for key, number, spec, live, positive, labelled in cursor.fetchall():
            if labelled:
                out.thresholds.append(
                    ThresholdLesson(key, number, _thresholds(spec), Share(positive, labelled), bool(live))
                )
    from django.contrib.auth import get_user_model

    usernames = [str(r[0]).removeprefix("user:") for r in approver_rows]
    names = {
        f"user:{u.username}": (u.get_full_name() or u.username)
        for u in get_user_model().objects.filter(username__in=usernames)
    }
    out.approvers = _speed(approver_rows, names)
    out.rules.sort(key=lambda r: (-(r.acted.value or 0.0), r.rule_key))
    out.thresholds.sort(key=lambda t: (-(t.precision.interval or (0.0, 0.0))[0], t.rule_key, -t.version))
    _traits(out)
    return out
