"""Shadow mode: a rule's draft evaluated beside its live version over every subject, without acting.

A run writes one :class:`ShadowRun` summary per rule (would-match count, added and removed against the
live version, sample ids) and nothing else: no decisions, no subject states, no escalations, no
deliveries. It uses the preview's evaluation (:func:`apps.rules.authoring.preview.preview_drafts`, SQL
that agrees with the evaluator subject by subject; one facts query per subject type for all the drafts), so
the shadow summary and the admin preview cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from apps.audit.services import Actor, audit_append_many, audit_record
from apps.rules.authoring.preview import PreviewResult, preview_drafts
from apps.rules.engine.ruleset import RulesFileError, rule_from_dict
from apps.rules.models import Rule, ShadowRun


@transaction.atomic
def rule_shadow_start(*, rule: Rule, actor: Actor, now: dt.datetime | None = None) -> Rule:
    """Put the rule's draft in shadow. Raises ``RulesFileError`` if the draft is not a valid rule."""
    rule = Rule.objects.select_for_update().get(pk=rule.pk)
    rule_from_dict({**rule.draft, "key": rule.key})
    if rule.shadow_since is None:
        rule.shadow_since = now or timezone.now()
        rule.save(update_fields=["shadow_since", "updated_at"])
        audit_record(action="rule.shadow_started", actor=actor, object_type="rule", object_id=rule.key)
    return rule


@transaction.atomic
def rule_shadow_stop(*, rule: Rule, actor: Actor) -> Rule:
    """Take the rule's draft out of shadow; its past runs stay for reading."""
    rule = Rule.objects.select_for_update().get(pk=rule.pk)
    if rule.shadow_since is not None:
        rule.shadow_since = None
        rule.save(update_fields=["shadow_since", "updated_at"])
        audit_record(action="rule.shadow_stopped", actor=actor, object_type="rule", object_id=rule.key)
    return rule


def _run(rule: Rule, result: PreviewResult | RulesFileError, now: dt.datetime) -> ShadowRun:
    draft = {**rule.draft, "key": rule.key}
    if isinstance(result, RulesFileError):
        # The draft was edited into an invalid state after shadowing started: record it, act on nothing.
        return ShadowRun(
            rule=rule,
            ran_at=now,
            spec=draft,
            live_version=rule.live_version,
            subject_type=str(draft.get("subject") or rule.subject_type),
            subjects=0,
            counts={},
            would_match=0,
            added=0,
            removed=0,
            error=str(result),
        )
    return ShadowRun(
        rule=rule,
        ran_at=now,
        spec=rule_from_dict(draft).to_dict(),
        live_version=rule.live_version,
        subject_type=result.subject_type,
        subjects=result.subjects,
        counts=result.counts,
        live_counts=result.live_counts,
        would_match=result.matches,
        added=result.new_count,
        removed=result.gone_count,
        sample_ids=result.samples,
        added_ids=result.new,
        removed_ids=result.gone,
    )


@transaction.atomic
def shadow_evaluate(
    *, now: dt.datetime | None = None, rules: Sequence[Rule] | None = None
) -> list[ShadowRun]:
    """Evaluate every rule in shadow (or ``rules``) now and store one summary each."""
    now = now or timezone.now()
    if rules is None:
        rules = list(Rule.objects.filter(shadow_since__isnull=False).select_related("live_version"))
    rules = list(rules)
    results = preview_drafts(rules, now=now)  # one facts query per subject type for all the drafts
    runs = ShadowRun.objects.bulk_create(
        [_run(rule, result, now) for rule, result in zip(rules, results, strict=True)]
    )
    audit_append_many(
        [
            {
                "action": "rule.shadow_run",
                "object_type": "rule",
                "object_id": run.rule.key,
                "data": {
                    "would_match": run.would_match,
                    "added": run.added,
                    "removed": run.removed,
                    "live_version": run.live_version.number if run.live_version else None,
                    "error": run.error,
                },
            }
            for run in runs
        ],
        actor="system:shadow",
    )
    return runs


@shared_task(name="apps.rules.shadow.shadow_evaluate_task", ignore_result=True)
def shadow_evaluate_task() -> str:
    """Nightly: every draft in shadow beside its live version (read-only, so safe to run twice)."""
    runs = shadow_evaluate()
    return f"{len(runs)} shadow run(s): " + ", ".join(f"{r.rule.key} {r.would_match}" for r in runs)
