"""Publishing rules and evaluating them: the writes of the rules app."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.audit.models import canonical_json
from apps.audit.services import Actor, audit_record, audit_record_many

from .durations import parse_duration
from .evaluator import CompiledCondition, Evaluation, Outcome, compile_condition
from .facts import Context, compute_contexts
from .models import Decision, Rule, RuleVersion, SubjectState
from .ruleset import dump_rules, parse_rules, rule_from_dict

_ROUTE_RANK = {"executive": 0, "standard": 1}


def _spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


@transaction.atomic
def rule_publish(*, rule: Rule, actor: Actor) -> RuleVersion:
    """Freeze the rule's draft into a new immutable version and make it live (no-op if unchanged)."""
    spec = rule_from_dict(rule.draft).to_dict()
    rule = Rule.objects.select_for_update().get(pk=rule.pk)
    if rule.live_version and rule.live_version.spec_hash == _spec_hash(spec):
        return rule.live_version
    number = (rule.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = RuleVersion.objects.create(
        rule=rule,
        number=number,
        spec=spec,
        spec_hash=_spec_hash(spec),
        published_at=timezone.now(),
        published_by=actor if getattr(actor, "is_authenticated", False) else None,  # type: ignore[misc]
    )
    rule.live_version = version
    rule.name = spec["name"]
    rule.subject_type = spec["subject"]
    rule.save(update_fields=["live_version", "name", "subject_type", "updated_at"])
    audit_record(
        action="rule.published",
        actor=actor,
        object_type="rule",
        object_id=rule.key,
        data={"version": number, "spec": spec},
    )
    return version


@transaction.atomic
def rules_import(*, text: str, actor: Actor) -> dict[str, list[str]]:
    """Import a rules file: all or nothing; a changed rule gets a new published version."""
    specs = parse_rules(text)  # raises RulesFileError with every problem and its line
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    for spec in specs:
        data = spec.to_dict()
        rule, created = Rule.objects.get_or_create(
            key=spec.key, defaults={"name": spec.name, "subject_type": spec.subject, "draft": data}
        )
        before = rule.live_version_id
        if not created:
            rule.draft = data
            rule.save(update_fields=["draft", "updated_at"])
        version = rule_publish(rule=rule, actor=actor)
        bucket = "created" if created else ("unchanged" if version.pk == before else "updated")
        report[bucket].append(spec.key)
    return report


def rules_export() -> str:
    rules = Rule.objects.filter(live_version__isnull=False).select_related("live_version").order_by("key")
    return dump_rules([rule_from_dict(r.live_version.spec) for r in rules if r.live_version])


# --- evaluation -------------------------------------------------------------------------------------

_compiled: dict[int, tuple[CompiledCondition, dt.timedelta | None]] = {}


def _compiled_for(version: RuleVersion) -> tuple[CompiledCondition, dt.timedelta | None]:
    # Versions are immutable, so compiling once per version id is safe for the life of the process.
    if version.pk not in _compiled:
        max_age = version.spec.get("max_fact_age")
        _compiled[version.pk] = (
            compile_condition(version.spec["when"], version.spec["subject"]),
            parse_duration(max_age) if max_age else None,
        )
    return _compiled[version.pk]


@dataclass
class EvaluationReport:
    subjects: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    escalations_opened: int = 0
    escalations_refired: int = 0
    suppressed: int = 0
    auto_resolved: int = 0

    def __str__(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.subjects} subjects; {outcomes or 'no rules'}; escalations opened "
            f"{self.escalations_opened}, re-fired {self.escalations_refired}, suppressed {self.suppressed}, "
            f"auto-resolved {self.auto_resolved}"
        )


def live_versions(subject_type: str) -> list[RuleVersion]:
    """Published, enabled rules for a subject type, in priority order (lower runs first)."""
    versions = [
        r.live_version
        for r in Rule.objects.filter(
            subject_type=subject_type, enabled=True, live_version__isnull=False
        ).select_related("live_version__rule")
    ]
    return sorted((v for v in versions if v), key=lambda v: (int(v.spec.get("priority", 100)), v.rule.key))


def evaluate_subjects(
    *,
    subject_type: str,
    ids: Sequence[int] | None = None,
    trigger: str = Decision.Trigger.MANUAL,
    now: dt.datetime | None = None,
    batch_size: int = 500,
) -> EvaluationReport:
    """Evaluate every live rule of ``subject_type`` on the given subjects (all when ``ids`` is None)."""
    now = now or timezone.now()
    report = EvaluationReport()
    versions = live_versions(subject_type)
    if not versions or (ids is not None and not ids):
        return report
    batch: list[Context] = []
    for context in compute_contexts(subject_type, ids, now=now):
        batch.append(context)
        if len(batch) >= batch_size:
            _evaluate_batch(batch, versions, trigger, now, report)
            batch = []
    if batch:
        _evaluate_batch(batch, versions, trigger, now, report)
    return report


@transaction.atomic
def _evaluate_batch(
    contexts: list[Context],
    versions: list[RuleVersion],
    trigger: str,
    now: dt.datetime,
    report: EvaluationReport,
) -> None:
    from apps.escalations.services import escalation_auto_resolve, escalation_fire

    subject_type = contexts[0].subject_type
    ids = [c.subject_id for c in contexts]
    states = {
        (s.rule_id, s.subject_id): s
        for s in SubjectState.objects.select_for_update().filter(
            rule__in=[v.rule_id for v in versions], subject_type=subject_type, subject_id__in=ids
        )
    }
    decisions: list[Decision] = []
    fired: list[tuple[RuleVersion, Context, Evaluation, Decision]] = []
    resolved: list[tuple[RuleVersion, Context, Decision]] = []
    new_states: list[SubjectState] = []
    for context in contexts:
        report.subjects += 1
        best_route: int | None = None
        best_rule = ""
        for version in versions:
            condition, max_age = _compiled_for(version)
            evaluation = condition.evaluate(context.values, ages=context.ages, max_age=max_age)
            outcome = str(evaluation.outcome.value)
            report.outcomes[outcome] += 1
            state = states.get((version.rule_id, context.subject_id))
            changed = state is None or state.last_outcome != outcome
            decision = Decision(
                rule_version=version,
                subject_type=subject_type,
                subject_id=context.subject_id,
                outcome=outcome,
                trigger=trigger,
                evaluated_at=now,
            )
            if evaluation.outcome == Outcome.MATCHED or changed:
                decision.facts = context.snapshot()
                decision.explanation = evaluation.to_json()
                decision.summary = evaluation.summary()
            if evaluation.outcome == Outcome.MATCHED:
                rank = _ROUTE_RANK.get(version.route, 1)
                if best_route is not None and rank > best_route:
                    # A higher route already escalated this subject (DMN-style inhibition).
                    decision.suppressed = f"suppressed by higher route rule {best_rule}"
                    report.suppressed += 1
                elif state and state.snoozed_until and state.snoozed_until > now:
                    decision.suppressed = (
                        f"snoozed until {state.snoozed_until:%Y-%m-%d %H:%M} ({state.snooze_reason})"
                    )
                    report.suppressed += 1
                else:
                    fired.append((version, context, evaluation, decision))
                if best_route is None or rank < best_route:
                    best_route, best_rule = rank, version.rule.key
            elif evaluation.outcome == Outcome.NOT_MATCHED and version.spec.get("auto_resolve", True):
                resolved.append((version, context, decision))
            decisions.append(decision)
            new_states.append(
                SubjectState(
                    rule_id=version.rule_id,
                    subject_type=subject_type,
                    subject_id=context.subject_id,
                    last_outcome=outcome,
                    last_evaluated_at=now,
                )
            )
    Decision.objects.bulk_create(decisions)
    audit_record_many(
        [
            {
                "action": "decision.matched",
                "object_type": "decision",
                "object_id": d.pk,
                "data": {
                    "rule": d.rule_version.rule.key,
                    "version": d.rule_version.number,
                    "subject": f"{d.subject_type}:{d.subject_id}",
                    "summary": d.summary,
                    "facts": d.facts,
                    "suppressed": d.suppressed,
                    "trigger": d.trigger,
                },
            }
            for d in decisions
            if d.outcome == Outcome.MATCHED
        ],
        actor="system:rules",
    )
    SubjectState.objects.bulk_create(
        new_states,
        update_conflicts=True,
        unique_fields=["rule", "subject_type", "subject_id"],
        update_fields=["last_outcome", "last_evaluated_at"],
    )
    for version, context, evaluation, decision in fired:
        result = escalation_fire(
            version=version, context=context, evaluation=evaluation, decision=decision, now=now
        )
        if result == "opened":
            report.escalations_opened += 1
        elif result == "refired":
            report.escalations_refired += 1
        else:
            report.suppressed += 1
    by_rule: dict[int, list[int]] = defaultdict(list)
    for version, context, _decision in resolved:
        by_rule[version.rule_id].append(context.subject_id)
    for rule_id, subject_ids in by_rule.items():
        report.auto_resolved += escalation_auto_resolve(
            rule_id=rule_id, subject_type=subject_type, subject_ids=subject_ids, now=now
        )
