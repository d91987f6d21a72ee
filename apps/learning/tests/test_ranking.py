"""Learned risk ranking: trained on synthetic labels where thin margins and missed milestones matter."""

from __future__ import annotations

import datetime as dt
import math
import random
from decimal import Decimal

import pytest

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation
from apps.learning.models import LearningSettings, RiskModel, RiskScore
from apps.learning.ranking import explain, rank_projects, risk_model_train, risk_scores_refresh, score
from tests.factories import ClientFactory, FinancialLineFactory, MilestoneFactory, ProjectFactory

from .builders import T0, escalation, publish, snapshot

pytestmark = pytest.mark.django_db


def labelled_escalations(n: int, seed: int = 7) -> None:
    """``n`` closed escalations: P(acted on) rises as the margin falls and with missed milestones;
    the contract value is noise; a fifth of the rows have no margin at all (missing)."""
    rng = random.Random(seed)
    version = publish("risk", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 50}]})
    rows = []
    for sid in range(1, n + 1):
        margin = rng.uniform(-10, 40)
        missed = rng.randint(0, 4)
        logit = 1.5 - 0.25 * margin + 0.8 * missed
        positive = rng.random() < 1 / (1 + math.exp(-logit))
        facts = snapshot(
            project__margin_pct=None if rng.random() < 0.2 else f"{margin:.4f}",
            project__milestones_missed=missed,
            project__contract_value=f"{rng.uniform(1e5, 1e6):.2f}",
        )
        rows.append(
            escalation(
                version,
                sid,
                opened=T0 + dt.timedelta(hours=sid),  # in time order, for the time split
                closed_after=T0 - T0,
                outcome="actioned" if positive else "false_alarm",
                facts=facts,
            )
        )
    Escalation.objects.bulk_create(rows)


def project_with_margin(income: str, cost: str, missed: int = 0):
    project = ProjectFactory(client=ClientFactory())
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal(income))
    FinancialLineFactory(project=project, kind="bill", amount=Decimal(cost))
    for _ in range(missed):
        MilestoneFactory(project=project)
    return project


@pytest.fixture
def threshold():
    settings = LearningSettings.load()
    settings.min_labels_for_ranking = 200
    settings.save()
    return settings


def test_below_the_label_threshold_there_is_no_model_and_ranking_returns_none(threshold):
    labelled_escalations(150)
    assert risk_model_train() is None
    assert RiskModel.objects.count() == 0
    assert rank_projects([1, 2]) is None
    assert explain(1) is None


def test_model_ranks_a_risky_project_above_a_safe_one_with_expected_signs(threshold):
    labelled_escalations(400)
    model = risk_model_train()
    assert model is not None and model.version == 1 and model.n_samples == 400
    coef = model.coefficients
    assert coef["project.margin_pct"] < 0, "thinner margin, more risk"
    assert coef["project.milestones_missed"] > 0, "more missed milestones, more risk"
    assert abs(coef["project.contract_value"]) < abs(coef["project.margin_pct"])
    assert "project.margin_pct__missing" in coef
    assert model.metrics["cv_auc"] > 0.7
    assert AuditEntry.objects.filter(action="risk_model.trained", object_id="1").exists()

    risky = project_with_margin("100000", "98000", missed=3)  # 2% margin, three missed milestones
    safe = project_with_margin("100000", "65000")  # 35% margin, on schedule
    scores = rank_projects([risky.pk, safe.pk])
    assert scores is not None and scores.model_version == 1
    assert scores[risky.pk] > scores[safe.pk]
    assert 0 < scores[safe.pk] < scores[risky.pk] < 1

    why = explain(risky.pk)
    assert why is not None and why["model_version"] == 1
    assert why["score"] == pytest.approx(scores[risky.pk])
    top = {c["feature"]: c for c in why["contributions"]}
    assert top["project.margin_pct"]["contribution"] > 0  # a low margin pushes the score up
    logit = why["intercept"] + sum(c["contribution"] for c in why["contributions"])
    assert 1 / (1 + math.exp(-logit)) == pytest.approx(why["score"], abs=0.05)  # the top terms dominate


def test_plain_python_prediction_matches_scikit_learn(threshold):
    """The stored numbers reproduce predict_proba: refit the same design and compare."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from apps.learning.ranking import _design, training_rows

    labelled_escalations(250, seed=3)
    model = risk_model_train()
    rows, labels = training_rows()
    indicators = [k.removesuffix("__missing") for k in model.coefficients if k.endswith("__missing")]
    x = np.asarray(_design(rows, model.features, model.means, model.scales, indicators))
    sk = LogisticRegression(C=1.0, max_iter=1000).fit(x, np.asarray(labels))
    expected = sk.predict_proba(x[:20])[:, 1]
    ours = [score(model, row) for row in rows[:20]]
    assert ours == pytest.approx(list(expected), abs=1e-6)


def test_retraining_makes_a_new_version_and_scores_record_it(threshold):
    labelled_escalations(220)
    risk_model_train()
    second = risk_model_train()
    assert second.version == 2
    version = publish("flag", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 99}]})
    project = project_with_margin("100000", "90000")
    open_one = escalation(version, project.pk)
    open_one.project = project
    open_one.save()
    assert risk_scores_refresh() == 1
    stored = RiskScore.objects.get(project_id=project.pk)
    assert stored.risk_model.version == 2
    assert stored.score == pytest.approx(rank_projects([project.pk])[project.pk])


def test_raising_the_threshold_above_the_model_sample_turns_ranking_off(threshold):
    labelled_escalations(210)
    risk_model_train()
    assert rank_projects([]) is not None
    threshold.min_labels_for_ranking = 1000
    threshold.save()
    assert rank_projects([1]) is None


def test_ranking_a_page_of_projects_is_a_fixed_number_of_queries(threshold, django_assert_max_num_queries):
    labelled_escalations(210)
    risk_model_train()
    few = [project_with_margin("100000", "90000").pk for _ in range(2)]
    many = [project_with_margin("100000", "80000").pk for _ in range(8)]
    with django_assert_max_num_queries(4):
        assert len(rank_projects(few)) == 2
    with django_assert_max_num_queries(4):
        assert len(rank_projects(few + many)) == 10


def test_the_model_is_judged_on_a_later_held_out_period_and_explained_in_words(threshold, client, executive):
    from apps.learning.ranking import explain_project

    labelled_escalations(400)
    model = risk_model_train()
    split = model.metrics["split"]
    assert (split["train_n"], split["holdout_n"]) == (280, 120)
    assert model.metrics["holdout_auc"] > 0.7
    bins = model.metrics["calibration"]
    assert sum(b["n"] for b in bins) == 120
    assert all(0 <= b["observed"] <= 1 and b["from"] <= b["predicted"] <= b["to"] for b in bins)

    risky = project_with_margin("100000", "98000", missed=3)
    why = explain_project(risky.pk)
    pushed = {p["fact"]: p for p in why["pushes"]}
    assert pushed["project.margin_pct"]["direction"] == "up" and pushed["project.margin_pct"]["value"] == "2%"
    assert pushed["project.milestones_missed"]["direction"] == "up"

    client.force_login(executive)
    page = client.get("/learning/model/").content.decode()
    assert "learned on the first 280, judged on the 120 after" in page
    assert f"{model.metrics['holdout_auc']:.3f}" in page and 'id="model-calibration"' in page
    # Each weight says what it does in words: a fact's higher value, or a fact having no value at all.
    weights = page.split('id="model-weights"')[1].split("</table>")[0]
    assert "<td>Margin</td>" in weights and "a higher value lowers the risk" in weights
    assert "<td>Margin has no value</td>" in weights and "having no value" in weights
