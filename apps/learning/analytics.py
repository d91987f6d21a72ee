"""Rule analytics per rule version, computed in SQL (ANCHORS, Audit and learning 2).

Definitions (the same labels as ``apps.rules.evaluation.backtest``, so analytics and backtests agree):

* **fires**: decisions of the version that matched; **subjects**: distinct subjects among them;
  **repeat ratio**: the share of fires on a subject the version had already fired on,
  ``(fires − subjects) / fires``.
* **escalations**: escalations opened by the version (their ``rule_version``).
* **labelled**: escalations closed as ``actioned`` / ``approved`` / ``rejected`` (*positive*: someone
  acted on it) or ``no_action_needed`` / ``false_alarm`` (*negative*). ``duplicate`` says another
  escalation covered the same problem and ``auto_resolved`` that nobody judged it, so neither says
  whether the rule was right: both are left out, as are open escalations.
* **precision**: positive / labelled. **false-alarm ratio**: ``false_alarm`` / labelled (the explicit
  "this should never have fired"; ``no_action_needed`` is the softer rest of the negatives).
* **time to acknowledge**: ``acknowledged_at − opened_at``; **time to resolve**: ``closed_at −
  opened_at`` for escalations a person closed (auto-resolved ones measure the data, not the people).
  Both as p50/p90 (``percentile_cont``), in seconds — means mislead on long-tailed times.
* **fire together**: two rules whose escalations opened on the same subject within the window.

Breakdowns by route and by account manager (the client's CRM owner) come from the same query with
``GROUPING SETS``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from django.db import connection

from apps.rules.evaluation.backtest import NEGATIVE, POSITIVE

FALSE_ALARM: Final = "false_alarm"


@dataclass
class Timing:
    """p50/p90 in seconds (None without data) and how many escalations they are over."""

    n: int = 0
    p50: float | None = None
    p90: float | None = None


@dataclass
class Breakdown:
    """Escalation figures of one rule version for one route or one account manager."""

    key: str
    label: str
    escalations: int = 0
    positive: int = 0
    negative: int = 0
    false_alarms: int = 0
    acknowledge: Timing = field(default_factory=Timing)
    resolve: Timing = field(default_factory=Timing)

    @property
    def labelled(self) -> int:
        return self.positive + self.negative

    @property
    def precision(self) -> float | None:
        return self.positive / self.labelled if self.labelled else None

    @property
    def false_alarm_ratio(self) -> float | None:
        return self.false_alarms / self.labelled if self.labelled else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            labelled=self.labelled, precision=self.precision, false_alarm_ratio=self.false_alarm_ratio
        )
        return data


@dataclass
class VersionStats(Breakdown):
    """Everything about one rule version: fires, labels, times, and the per-route / per-AM splits."""

    rule_key: str = ""
    version: int = 0
    version_id: int = 0
    fires: int = 0
    subjects: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    by_route: list[Breakdown] = field(default_factory=list)
    by_account_manager: list[Breakdown] = field(default_factory=list)

    @property
    def repeat_ratio(self) -> float | None:
        return (self.fires - self.subjects) / self.fires if self.fires else None

    def as_dict(self) -> dict[str, Any]:
        data = super().as_dict()
        data.update(
            repeat_ratio=self.repeat_ratio,
            by_route=[b.as_dict() for b in self.by_route],
            by_account_manager=[b.as_dict() for b in self.by_account_manager],
        )
        return data


@dataclass(frozen=True)
class CoFiring:
    """Two rules whose escalations opened on the same subject within the window."""

    rule_a: str
    rule_b: str
    pairs: int
    subjects: int


_FIRES_SQL = """
SELECT d.rule_version_id, COUNT(*), COUNT(DISTINCT (d.subject_type, d.subject_id))
FROM rules_decision d
WHERE d.outcome = 'matched' {where}
GROUP BY d.rule_version_id
"""

# One pass over the escalations: per version, per (version, route), per (version, account manager).
_ESCALATIONS_SQL = """
SELECT e.rule_version_id,
    GROUPING(e.route) = 0 AS by_route,
    GROUPING(o.id) = 0 AS by_am,
    e.route, o.id, MAX(COALESCE(NULLIF(o.name, ''), o.email)),
    COUNT(*),
    COUNT(*) FILTER (WHERE e.outcome = ANY(%(positive)s)),
    COUNT(*) FILTER (WHERE e.outcome = ANY(%(negative)s)),
    COUNT(*) FILTER (WHERE e.outcome = %(false_alarm)s),
    COUNT(e.acknowledged_at),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM e.acknowledged_at - e.opened_at)),
    percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM e.acknowledged_at - e.opened_at)),
    COUNT(*) FILTER (WHERE e.closed_at IS NOT NULL AND e.outcome <> 'auto_resolved'),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM e.closed_at - e.opened_at))
        FILTER (WHERE e.outcome <> 'auto_resolved'),
    percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM e.closed_at - e.opened_at))
        FILTER (WHERE e.outcome <> 'auto_resolved')
FROM escalations_escalation e
LEFT JOIN entities_client c ON c.id = e.client_id
LEFT JOIN entities_crmowner o ON o.id = c.owner_id
WHERE TRUE {where}
GROUP BY GROUPING SETS ((e.rule_version_id), (e.rule_version_id, e.route), (e.rule_version_id, o.id))
"""

_OUTCOMES_SQL = """
SELECT e.rule_version_id, e.outcome, COUNT(*)
FROM escalations_escalation e
WHERE e.outcome <> '' {where}
GROUP BY e.rule_version_id, e.outcome
"""

_VERSIONS_SQL = """
SELECT v.id, r.key, v.number FROM rules_ruleversion v JOIN rules_rule r ON r.id = v.rule_id
WHERE v.id = ANY(%(ids)s)
"""

_COFIRING_SQL = """
SELECT ra.key, rb.key, COUNT(*), COUNT(DISTINCT (a.subject_type, a.subject_id))
FROM escalations_escalation a
JOIN escalations_escalation b
  ON b.subject_type = a.subject_type AND b.subject_id = a.subject_id AND b.rule_id > a.rule_id
 AND b.opened_at BETWEEN a.opened_at - %(window)s AND a.opened_at + %(window)s
JOIN rules_rule ra ON ra.id = a.rule_id
JOIN rules_rule rb ON rb.id = b.rule_id
WHERE TRUE {where}
GROUP BY ra.key, rb.key
ORDER BY COUNT(*) DESC, ra.key, rb.key
"""


def _filters(
    alias: str, time_column: str, rule_key: str | None, since: dt.datetime | None
) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if rule_key is not None:
        # ``alias`` is one of this module's literals; the key is a bound parameter.
        clauses.append(
            f"{alias}.rule_version_id IN (SELECT v.id FROM rules_ruleversion v JOIN rules_rule r "  # noqa: S608
            "ON r.id = v.rule_id WHERE r.key = %(rule_key)s)"
        )
        params["rule_key"] = rule_key
    if since is not None:
        clauses.append(f"{alias}.{time_column} >= %(since)s")
        params["since"] = since
    return "".join(f" AND {c}" for c in clauses), params


def _timing(n: int, p50: float | None, p90: float | None) -> Timing:
    return Timing(n=n, p50=None if p50 is None else float(p50), p90=None if p90 is None else float(p90))


def rule_analytics(*, rule_key: str | None = None, since: dt.datetime | None = None) -> list[VersionStats]:
    """Analytics of every rule version that fired or escalated (of ``rule_key`` only, if given).

    Four aggregate queries whatever the number of versions, escalations or account managers.
    """
    stats: dict[int, VersionStats] = {}

    def of(version_id: int) -> VersionStats:
        if version_id not in stats:
            stats[version_id] = VersionStats(key=str(version_id), label="", version_id=version_id)
        return stats[version_id]

    with connection.cursor() as cursor:
        where, params = _filters("d", "evaluated_at", rule_key, since)
        cursor.execute(_FIRES_SQL.format(where=where), params)
        for version_id, fires, subjects in cursor.fetchall():
            entry = of(version_id)
            entry.fires, entry.subjects = fires, subjects

        where, params = _filters("e", "opened_at", rule_key, since)
        params.update(positive=list(POSITIVE), negative=list(NEGATIVE), false_alarm=FALSE_ALARM)
        cursor.execute(_ESCALATIONS_SQL.format(where=where), params)
        for row in cursor.fetchall():
            version_id, by_route, by_am, route, owner_id, owner_name = row[:6]
            n, positive, negative, false_alarms, n_ack, ack50, ack90, n_res, res50, res90 = row[6:]
            entry = of(version_id)
            if by_route:
                target = Breakdown(key=route, label=route)
                entry.by_route.append(target)
            elif by_am:
                target = Breakdown(
                    key="" if owner_id is None else str(owner_id),
                    label=owner_name or "(no account manager)",
                )
                entry.by_account_manager.append(target)
            else:
                target = entry
            target.escalations, target.positive, target.negative = n, positive, negative
            target.false_alarms = false_alarms
            target.acknowledge = _timing(n_ack, ack50, ack90)
            target.resolve = _timing(n_res, res50, res90)

        cursor.execute(_OUTCOMES_SQL.format(where=where), params)
        for version_id, outcome, count in cursor.fetchall():
            of(version_id).outcomes[outcome] = count

        if not stats:
            return []
        cursor.execute(_VERSIONS_SQL, {"ids": list(stats)})
        for version_id, key, number in cursor.fetchall():
            entry = stats[version_id]
            entry.rule_key, entry.version = key, number
            entry.key, entry.label = f"{key} v{number}", f"{key} v{number}"
    for entry in stats.values():
        entry.by_route.sort(key=lambda b: b.key)
        entry.by_account_manager.sort(key=lambda b: b.label)
    return sorted(stats.values(), key=lambda s: (s.rule_key, -s.version))


def rules_fired_together(
    *, window: dt.timedelta, rule_key: str | None = None, since: dt.datetime | None = None
) -> list[CoFiring]:
    """Pairs of rules with escalations opened on the same subject within ``window`` of each other.

    A self-join on (subject_type, subject_id), which the escalation index serves; ``b.rule_id >
    a.rule_id`` counts each pair once.
    """
    clauses: list[str] = []
    params: dict[str, Any] = {"window": window}
    if rule_key is not None:
        clauses.append("(ra.key = %(rule_key)s OR rb.key = %(rule_key)s)")
        params["rule_key"] = rule_key
    if since is not None:
        clauses.append("a.opened_at >= %(since)s AND b.opened_at >= %(since)s")
        params["since"] = since
    where = "".join(f" AND {c}" for c in clauses)
    with connection.cursor() as cursor:
        cursor.execute(_COFIRING_SQL.format(where=where), params)
        return [CoFiring(a, b, pairs, subjects) for a, b, pairs, subjects in cursor.fetchall()]
