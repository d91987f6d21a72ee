"""The nightly tasks, called directly: each runs its service and reports what it did."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.escalations.models import Escalation
from apps.learning import tasks
from apps.learning.models import LearningSettings, ShadowSample, ThresholdSuggestion
from apps.rules.evaluation.services import evaluate_subjects
from apps.rules.models import Decision
from tests.factories import ClientFactory, FinancialLineFactory, ProjectFactory

from .builders import T0, decision, escalation, fresh_streams, now, publish, snapshot

pytestmark = pytest.mark.django_db


def test_nightly_tasks_run_end_to_end():
    fresh_streams()
    client = ClientFactory()
    for cost in ("95000", "60000", "50000"):
        project = ProjectFactory(client=client)
        FinancialLineFactory(project=project, kind="invoice", amount="100000")
        FinancialLineFactory(project=project, kind="bill", amount=cost)
    version = publish("thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 30}]})
    evaluate_subjects(subject_type="project")
    assert Escalation.objects.count() == 1

    assert tasks.shadow_nightly() == "labelled 0 positive, 0 negative; sampled {'project': 2}"
    assert ShadowSample.objects.count() == 2

    # Labelled history for the sweep: margins 5 and 28 flagged; only the first was worth it.
    Decision.objects.bulk_create(
        [
            decision(version, 9001, facts=snapshot(project__margin_pct="5")),
            decision(version, 9002, facts=snapshot(project__margin_pct="28")),
        ]
    )
    Escalation.objects.bulk_create(
        [
            escalation(version, 9001, closed_after=dt.timedelta(hours=1), outcome="actioned"),
            escalation(version, 9002, closed_after=dt.timedelta(hours=1), outcome="false_alarm"),
        ]
    )
    assert tasks.suggest_thresholds() == "1 suggestions"
    assert ThresholdSuggestion.objects.get().op == "lt"

    LearningSettings.objects.filter(pk=1).update(min_labels_for_ranking=1000)
    assert tasks.train_risk_model() == "model not trained (too few labels); 0 projects scored"

    Decision.objects.filter(subject_id=9001).update(evaluated_at=T0 - dt.timedelta(days=400))
    Decision.objects.create(
        **{
            "rule_version": version,
            "subject_type": "project",
            "subject_id": 9001,
            "outcome": "matched",
            "trigger": "sync",
            "evaluated_at": now(),
            "facts": snapshot(project__margin_pct="5"),
        }
    )
    assert tasks.prune_decisions() == "1 decisions pruned"
