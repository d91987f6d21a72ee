"""Learned risk ranking of flagged projects (issue 6 §5).

Once at least ``LearningSettings.min_labels_for_ranking`` escalations carry a settled label, a
logistic regression is fitted over the numeric project and client facts frozen in each labelled
escalation's evidence (the facts when it opened or last fired): label 1 for ``actioned`` /
``approved`` / ``rejected``, 0 for ``no_action_needed`` / ``false_alarm`` (the backtest's labels).
Each value feature is standardised; a missing value is imputed with the training mean (z = 0) and
flagged by a ``<fact>__missing`` indicator when the training data had gaps.

The model is stored as numbers (:class:`~apps.learning.models.RiskModel`), never pickled, and
predicted in plain Python, so a score can be recomputed and explained from the row alone. Below the
label threshold, or without a model, :func:`rank_projects` returns ``None`` and callers rank by
severity.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.escalations.models import Escalation
from apps.rules.engine.catalogue import FACTS, FactType
from apps.rules.evaluation.backtest import NEGATIVE, POSITIVE
from apps.rules.evaluation.facts import compute_contexts

from .cases import opened_facts
from .models import LearningSettings, RiskModel, RiskScore

_NUMERIC: Final = (FactType.MONEY, FactType.PERCENT, FactType.INT, FactType.BOOL)
# Facts a project's own context holds, so a model trained on any subject's evidence can score projects.
CANDIDATE_FEATURES: Final = tuple(
    f.name for f in FACTS.values() if f.subject in ("project", "client") and f.type in _NUMERIC
)
MISSING: Final = "__missing"


class Scores(dict[int, float]):
    """``{project_id: P(positive)}`` with the version of the model that produced the scores."""

    def __init__(self, scores: Mapping[int, float], model_version: int) -> None:
        super().__init__(scores)
        self.model_version = model_version


@dataclass(frozen=True)
class Contribution:
    """One feature's share of a score: coefficient × standardised value (log-odds)."""

    feature: str
    value: Any
    coefficient: float
    contribution: float


def _number(raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _snapshot_values(snapshot: object) -> dict[str, float | None]:
    """A ``{fact: {value, ...}}`` snapshot → ``{feature: number or None}``."""
    if not isinstance(snapshot, Mapping):
        return dict.fromkeys(CANDIDATE_FEATURES)
    out: dict[str, float | None] = {}
    for name in CANDIDATE_FEATURES:
        entry = snapshot.get(name)
        out[name] = _number(entry.get("value")) if isinstance(entry, Mapping) else None
    return out


def labelled_count() -> int:
    return Escalation.objects.filter(outcome__in=POSITIVE + NEGATIVE).count()


def training_rows(
    *, dated: list[dt.datetime] | None = None
) -> tuple[list[dict[str, float | None]], list[int]]:
    """(feature values, labels) of every labelled escalation, oldest first, from the facts it was opened
    on (its opening decision's, or the ``opened_evidence`` it stored; its current evidence when neither
    has them). ``dated`` receives each row's opening time, for the time split."""
    rows = (
        Escalation.objects.filter(outcome__in=POSITIVE + NEGATIVE)
        .order_by("opened_at", "id")
        .values_list(
            *("opened_evidence", "opened_decision__facts", "evidence_copy", "evidence_decision__facts"),
            *("outcome", "opened_at"),
        )
    )
    features, labels = [], []
    for opened, opening_facts, current, firing_facts, outcome, opened_at in rows.iterator(chunk_size=2000):
        facts = opened_facts(opened, opening_facts, current, firing_facts)
        features.append(_snapshot_values(facts))
        labels.append(1 if outcome in POSITIVE else 0)
        if dated is not None:
            dated.append(opened_at)
    return features, labels


HOLDOUT: Final = 0.3
CALIBRATION_BINS: Final = 5


def _held_out(x: Any, y: Any, dated: list[dt.datetime]) -> dict[str, Any]:
    """Fit on the earlier 70% of the labels, judge on the later 30%: AUC and calibration (a time split)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    cut = int(len(y) * (1 - HOLDOUT))
    out: dict[str, Any] = {
        "split": {
            "train_n": cut,
            "holdout_n": len(y) - cut,
            "cutoff": dated[cut].isoformat() if 0 < cut < len(dated) else None,
        }
    }
    if cut < 2 or len(set(y[:cut].tolist())) < 2 or len(set(y[cut:].tolist())) < 2:
        out["holdout_note"] = "the held-out period needs both outcomes to be judged"
        return out
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x[:cut], y[:cut])
    predicted = model.predict_proba(x[cut:])[:, 1]
    out["holdout_auc"] = float(roc_auc_score(y[cut:], predicted))
    bins = []
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    for low, high in itertools.pairwise(edges):
        inside = (predicted >= low) & ((predicted < high) if high < 1 else (predicted <= high))
        if inside.any():
            bins.append(
                {
                    "from": float(low),
                    "to": float(high),
                    "n": int(inside.sum()),
                    "predicted": float(predicted[inside].mean()),
                    "observed": float(y[cut:][inside].mean()),
                }
            )
    out["calibration"] = bins
    return out


def _design(
    rows: Sequence[Mapping[str, float | None]], features: Sequence[str], means: Mapping[str, float],
    scales: Mapping[str, float], indicators: Sequence[str],
) -> list[list[float]]:  # fmt: skip
    matrix = []
    for row in rows:
        line = []
        for name in features:
            value = row.get(name)
            line.append(0.0 if value is None else (value - means[name]) / scales[name])
        line.extend(1.0 if row.get(name) is None else 0.0 for name in indicators)
        matrix.append(line)
    return matrix


@transaction.atomic
def risk_model_train(*, actor: Actor = "system:learning", force: bool = False) -> RiskModel | None:
    """Fit and store a new model version; None when there are too few labels (or only one class)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_score

    settings = LearningSettings.load()
    dated: list[dt.datetime] = []
    rows, labels = training_rows(dated=dated)
    if (len(rows) < settings.min_labels_for_ranking and not force) or len(set(labels)) < 2:
        return None
    means: dict[str, float] = {}
    scales: dict[str, float] = {}
    indicators: list[str] = []
    features: list[str] = []
    for name in CANDIDATE_FEATURES:
        present = [v for r in rows if (v := r[name]) is not None]
        if len(set(present)) < 2:
            continue  # a constant or absent fact cannot rank anything
        features.append(name)
        means[name] = float(np.mean(present))
        scales[name] = float(np.std(present)) or 1.0
        if len(present) < len(rows):
            indicators.append(name)
    if not features:
        return None
    x = np.asarray(_design(rows, features, means, scales, indicators))
    y = np.asarray(labels)
    model = LogisticRegression(C=1.0, max_iter=1000)
    model.fit(x, y)
    metrics: dict[str, Any] = {
        "train_auc": float(roc_auc_score(y, model.predict_proba(x)[:, 1])),
        "positive_rate": float(y.mean()),
    }
    metrics.update(_held_out(x, y, dated))
    folds = min(5, int(np.bincount(y).min()))
    if folds >= 2:
        metrics["cv_auc"] = float(
            np.mean(
                cross_val_score(LogisticRegression(C=1.0, max_iter=1000), x, y, cv=folds, scoring="roc_auc")
            )
        )
    names = features + [f"{n}{MISSING}" for n in indicators]
    version = (RiskModel.objects.aggregate(v=Max("version"))["v"] or 0) + 1
    risk_model = RiskModel.objects.create(
        version=version,
        trained_at=timezone.now(),
        n_samples=len(rows),
        n_positive=int(y.sum()),
        features=features,
        coefficients={n: float(c) for n, c in zip(names, model.coef_[0], strict=True)},
        intercept=float(model.intercept_[0]),
        means=means,
        scales=scales,
        metrics=metrics,
    )
    audit_record(
        action="risk_model.trained",
        actor=actor,
        object_type="risk_model",
        object_id=version,
        data={"n": len(rows), "positive": int(y.sum()), "metrics": metrics},
    )
    return risk_model


def current_model() -> RiskModel | None:
    """The newest model, if enough labels exist for the learned ranking to be used at all."""
    model = RiskModel.objects.order_by("-version").first()
    if model is None or model.n_samples < LearningSettings.load().min_labels_for_ranking:
        return None
    return model


def _z(model: RiskModel, name: str, value: float | None) -> float:
    return 0.0 if value is None else (value - model.means[name]) / model.scales[name]


def contributions(model: RiskModel, values: Mapping[str, float | None]) -> list[Contribution]:
    out = []
    for name in model.features:
        value = values.get(name)
        out.append(
            Contribution(
                name, value, model.coefficients[name], model.coefficients[name] * _z(model, name, value)
            )
        )
        indicator = f"{name}{MISSING}"
        if indicator in model.coefficients and value is None:
            out.append(
                Contribution(indicator, True, model.coefficients[indicator], model.coefficients[indicator])
            )
    return out


def pushes(model: RiskModel, snapshot: object, *, top: int = 3) -> list[dict[str, Any]]:
    """The facts that pushed a project's learned risk up or down the most, in words, from its facts
    snapshot (``{fact: {value, ...}}``): no query, so a page of projects costs nothing more."""
    from apps.rules.engine.wording import shape_of, written

    values = _snapshot_values(snapshot)
    raw = snapshot if isinstance(snapshot, Mapping) else {}
    parts = sorted(contributions(model, values), key=lambda c: abs(c.contribution), reverse=True)
    out = []
    for c in parts[:top]:
        if abs(c.contribution) < 1e-9:
            continue
        name = c.feature.removesuffix(MISSING)
        label = shape_of(name).label or name
        entry = raw.get(name)
        shown = (
            "has no value"
            if c.feature.endswith(MISSING)
            else written(entry.get("value") if isinstance(entry, Mapping) else c.value, name)
        )
        out.append(
            {
                "fact": name,
                "label": label,
                "value": shown,
                "direction": "up" if c.contribution > 0 else "down",
                "contribution": c.contribution,
            }
        )
    return out


def score(model: RiskModel, values: Mapping[str, float | None]) -> float:
    """P(positive) from the stored numbers (the same arithmetic as scikit-learn's predict_proba)."""
    logit = model.intercept + sum(c.contribution for c in contributions(model, values))
    return 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))


def _project_values(
    project_ids: Sequence[int], now: dt.datetime | None
) -> dict[int, dict[str, float | None]]:
    # One facts query for the whole batch (the same SQL live evaluation uses).
    return {
        c.subject_id: {n: _number(c.values.get(n)) for n in CANDIDATE_FEATURES}
        for c in compute_contexts("project", list(project_ids), now=now)
    }


def rank_projects(project_ids: Sequence[int], *, now: dt.datetime | None = None) -> Scores | None:
    """``{project_id: score}`` (higher = more likely to need action) or None: rank by severity."""
    model = current_model()
    if model is None:
        return None
    if not project_ids:
        return Scores({}, model.version)
    values = _project_values(project_ids, now)
    return Scores({pid: score(model, v) for pid, v in values.items()}, model.version)


def explain(project_id: int, *, top: int = 5, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """The score of one project and its largest contributions (coefficient × standardised value)."""
    model = current_model()
    if model is None:
        return None
    values = _project_values([project_id], now).get(project_id)
    if values is None:
        return None
    parts = sorted(contributions(model, values), key=lambda c: abs(c.contribution), reverse=True)
    return {
        "project_id": project_id,
        "model_version": model.version,
        "score": score(model, values),
        "intercept": model.intercept,
        "contributions": [c.__dict__ for c in parts[:top]],
    }


@transaction.atomic
def risk_scores_refresh(*, now: dt.datetime | None = None) -> int:
    """Store the current score of every project with an open escalation (one upsert)."""
    now = now or timezone.now()
    model = current_model()
    if model is None:
        return 0
    ids = list(
        Escalation.objects.open()
        .filter(project__isnull=False)
        .values_list("project_id", flat=True)
        .distinct()
    )
    values = _project_values(ids, now)
    RiskScore.objects.bulk_create(
        [
            RiskScore(project_id=pid, risk_model=model, score=score(model, v), scored_at=now)
            for pid, v in values.items()
        ],
        update_conflicts=True,
        unique_fields=["project_id"],
        update_fields=["risk_model", "score", "scored_at"],
    )
    return len(values)


def explain_project(project_id: int, *, top: int = 3) -> dict[str, Any] | None:
    """The learned score of one project and the facts that pushed it, in words (None: no usable model)."""
    model = current_model()
    if model is None:
        return None
    for context in compute_contexts("project", [project_id]):
        snapshot = context.snapshot()
        return {
            "model_version": model.version,
            "score": score(model, _snapshot_values(snapshot)),
            "pushes": pushes(model, snapshot, top=top),
        }
    return None
