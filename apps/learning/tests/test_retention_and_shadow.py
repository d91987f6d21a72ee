"""Retention prunes only old heavy payloads; the shadow sample draws unflagged subjects and labels them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation
from apps.learning.models import LearningSettings, ShadowSample
from apps.learning.retention import decisions_prune
from apps.learning.sampling import shadow_sample_take, shadow_samples_label
from apps.orchestration.pipeline import evaluate_subjects
from apps.rules.models import Decision
from tests.factories import ClientFactory, FinancialLineFactory, ProjectFactory

from .builders import decision, escalation, fresh_streams, now, publish, snapshot

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)


def test_retention_prunes_only_old_heavy_payloads_and_keeps_slim_fields_and_audit():
    LearningSettings.objects.update_or_create(pk=1, defaults={"retention_days": 30})
    version = publish("prune", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 10}]})
    today = now()
    facts = snapshot(project__margin_pct="5")
    rows = Decision.objects.bulk_create(
        [
            decision(version, 1, at=today - 90 * DAY, facts=facts),  # old, a newer context exists: pruned
            decision(version, 1, at=today - 60 * DAY, facts=facts),  # old, a newer context exists: pruned
            decision(version, 1, at=today - 5 * DAY, facts=facts),  # recent: kept
            decision(version, 2, at=today - 90 * DAY, facts=facts),  # old but project 2's newest: kept
            decision(version, 2, at=today - 80 * DAY, outcome="not_matched"),  # already slim
        ]
    )
    call_command("verify_audit", "--no-anchor")  # the chain is intact before
    audit_before = list(AuditEntry.objects.order_by("id").values_list("id", "hash"))

    assert decisions_prune(now=today) == 2

    after = {d.pk: d for d in Decision.objects.all()}
    old1, old2, recent, only, slim = (after[r.pk] for r in rows)
    for pruned in (old1, old2):
        assert pruned.facts is None and pruned.explanation is None
        # The slim row stays: outcome, rule version, subject, trigger, time, summary.
        assert (pruned.outcome, pruned.rule_version_id, pruned.subject_id, pruned.trigger) == (
            "matched",
            version.pk,
            1,
            "sync",
        )
        assert pruned.summary == "matched on 1" and pruned.evaluated_at < today - 30 * DAY
    assert recent.facts == facts and recent.explanation is not None
    assert only.facts == facts, "the newest context of a subject is what backtests replay"
    assert slim.facts is None and slim.outcome == "not_matched"
    # Audit entries are untouched; the prune itself is one new entry.
    assert (
        list(AuditEntry.objects.filter(id__lte=audit_before[-1][0]).values_list("id", "hash")) == audit_before
    )
    assert AuditEntry.objects.get(action="decisions.pruned").data["rows"] == 2
    call_command("verify_audit", "--no-anchor")
    assert decisions_prune(now=today) == 0, "a second run finds nothing"


def test_retention_works_in_batches():
    LearningSettings.objects.update_or_create(pk=1, defaults={"retention_days": 1})
    version = publish("prune-batch", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 10}]})
    today = now()
    Decision.objects.bulk_create(
        decision(version, 7, at=today - (10 + i) * DAY, facts=snapshot(project__margin_pct="1"))
        for i in range(25)
    )
    assert decisions_prune(now=today, batch=10) == 24
    assert Decision.objects.filter(facts__isnull=False).count() == 1
    assert AuditEntry.objects.filter(action="decisions.pruned").count() == 3


@pytest.fixture
def projects():
    """Six projects: two on thin margins (the live rule flags them), four healthy."""
    fresh_streams()
    client = ClientFactory()
    out = []
    for cost in ("95000", "92000", "60000", "50000", "40000", "30000"):
        project = ProjectFactory(client=client)
        FinancialLineFactory(project=project, kind="invoice", amount="100000")
        FinancialLineFactory(project=project, kind="bill", amount=cost)
        out.append(project)
    publish("thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 10}]})
    evaluate_subjects(subject_type="project")
    return out


def test_shadow_sample_draws_only_unflagged_subjects_with_their_facts(projects):
    flagged = {p.pk for p in projects[:2]}
    assert set(Escalation.objects.values_list("subject_id", flat=True)) == flagged
    samples = shadow_sample_take(subject_type="project", size=3)
    assert len(samples) == 3
    assert not {s.subject_id for s in samples} & flagged
    assert all(s.weight == pytest.approx(4 / 3) for s in samples)  # four unflagged, three drawn
    margins = {s.facts["project.margin_pct"]["value"] for s in samples}
    assert margins <= {"40.0000", "50.0000", "60.0000", "70.0000"}
    everyone = shadow_sample_take(subject_type="project", size=50)
    assert {s.subject_id for s in everyone} == {p.pk for p in projects[2:]}
    assert AuditEntry.objects.filter(action="shadow_sample.taken").count() == 2


def test_shadow_labels_positive_on_an_acted_escalation_negative_after_the_horizon(projects):
    LearningSettings.objects.update_or_create(pk=1, defaults={"shadow_horizon_days": 30})
    sampled_at = now() - 40 * DAY
    healthy = projects[2:]
    assert shadow_sample_take(subject_type="project", size=0) == []
    ShadowSample.objects.bulk_create(
        ShadowSample(subject_type="project", subject_id=p.pk, sampled_at=sampled_at, facts={})
        for p in healthy
    )
    recent = ShadowSample.objects.create(
        subject_type="project", subject_id=healthy[0].pk, sampled_at=now(), facts={}
    )
    version = publish("later", {"all": [{"fact": "project.margin_pct", "op": "gt", "value": 1}]})
    acted, dismissed, still_open, late = healthy
    Escalation.objects.bulk_create(
        [
            escalation(version, acted.pk, opened=sampled_at + 3 * DAY, closed_after=DAY, outcome="actioned"),
            escalation(
                version, dismissed.pk, opened=sampled_at + 3 * DAY, closed_after=DAY, outcome="false_alarm"
            ),
            escalation(version, still_open.pk, opened=sampled_at + 5 * DAY),
            escalation(version, late.pk, opened=sampled_at + 35 * DAY, closed_after=DAY, outcome="actioned"),
        ]
    )
    assert shadow_samples_label() == (1, 2)
    labels = dict(ShadowSample.objects.filter(sampled_at=sampled_at).values_list("subject_id", "positive"))
    assert labels == {acted.pk: True, dismissed.pk: False, still_open.pk: None, late.pk: False}
    assert ShadowSample.objects.get(subject_id=acted.pk, sampled_at=sampled_at).escalation is not None
    recent.refresh_from_db()
    assert recent.positive is None, "inside its horizon and nothing acted on yet"
    assert shadow_samples_label() == (0, 0)


def test_each_shadow_sample_in_admin_names_the_rule_that_labelled_it(client, ops_manager, projects):
    """A sample is of subjects no rule flagged; once a rule's escalation labels it a miss, the sample
    names that rule (the threshold sweep of that rule is the one it counts against)."""
    sampled_at = now() - 40 * DAY
    missed, quiet = projects[2:4]
    version = publish("later", {"all": [{"fact": "project.margin_pct", "op": "gt", "value": 1}]})
    [opened] = Escalation.objects.bulk_create(
        [escalation(version, missed.pk, opened=sampled_at + 3 * DAY, closed_after=DAY, outcome="actioned")]
    )
    ShadowSample.objects.bulk_create(
        ShadowSample(subject_type="project", subject_id=p.pk, sampled_at=sampled_at, facts={})
        for p in (missed, quiet)
    )
    shadow_samples_label()
    rule = opened.rule
    assert ShadowSample.objects.get(subject_id=missed.pk).rule_words == f"later — {rule.name}"
    assert ShadowSample.objects.get(subject_id=quiet.pk).rule_words == "no rule flagged it"

    client.force_login(ops_manager)
    page = client.get(reverse("admin:learning_shadowsample_changelist")).content.decode()
    assert f"later — {rule.name}" in page and "no rule flagged it" in page
    assert str(missed) in page and str(quiet) in page, "subjects by name, linked"


def test_an_escalation_is_learned_from_the_facts_it_opened_on_and_retention_keeps_them(projects):
    """The evidence when it opened is its opening decision's (not a second copy in the row): a re-fire
    moves the escalation's evidence, learning still reads the facts it opened on, and retention, which
    prunes a decision's payload once a newer one exists, keeps an opening decision's."""
    from apps.learning.cases import escalation_cases
    from apps.learning.ranking import training_rows

    LearningSettings.objects.update_or_create(pk=1, defaults={"retention_days": 1})
    thin = projects[0]
    escalation = Escalation.objects.get(subject_id=thin.pk)
    opener = escalation.opened_decision
    assert escalation.opened_evidence == {} and opener is not None and opener.escalation_id == escalation.pk
    assert escalation.opening_evidence == escalation.evidence
    for cost in ("3000", "1000"):  # margin 5% → 2% → 1%: two re-fires
        FinancialLineFactory(project=thin, kind="bill", amount=cost)
        assert evaluate_subjects(subject_type="project", ids=[thin.pk]).escalations_refired == 1
    Escalation.objects.filter(pk=escalation.pk).update(status="resolved", outcome="actioned", closed_at=now())
    escalation.refresh_from_db()

    def margin(facts: dict) -> str:
        return facts["project.margin_pct"]["value"]

    assert margin(escalation.evidence["facts"]) == "1.0000"
    assert margin(escalation.opening_evidence["facts"]) == "5.0000"

    def learned() -> tuple[object, object]:
        [case] = [c for c in escalation_cases("thin", "project") if c.ref == escalation.pk]
        rows, _labels = training_rows()
        return case.values["project.margin_pct"], rows[0]["project.margin_pct"]

    assert learned() == (Decimal("5.0000"), 5.0)
    # Of the thin project's three decisions, the first re-fire's payload goes: a newer one exists. The
    # opening decision has newer ones too, but its payload is kept.
    assert decisions_prune(now=now() + 10 * DAY) == 1
    opener.refresh_from_db()
    assert opener.facts is not None and opener.explanation is not None
    assert learned() == (Decimal("5.0000"), 5.0)
    # The decision it last fired on is its current evidence: kept as well, once a newer decision exists.
    Decision.objects.create(
        rule_version=opener.rule_version, subject_type="project", subject_id=thin.pk, outcome="not_matched",
        trigger="sync", evaluated_at=now() + DAY, facts={"later": {"value": 1}}, explanation={}, summary="",
    )  # fmt: skip
    assert decisions_prune(now=now() + 10 * DAY) == 0
    assert margin(Escalation.objects.get(pk=escalation.pk).evidence["facts"]) == "1.0000"
