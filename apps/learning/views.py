"""Pages of the learning loop: report a miss, and what Fulcrum learned."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from apps.accounts.roles import ADMINISTRATORS, EXECUTIVES, OPERATIONS, in_role
from apps.dashboard.templatetags.fulcrum import OPERATOR_WORDS
from apps.dashboard.views import role_required
from apps.rules.engine.wording import shape_of, written

from .forms import MissForm
from .lessons import MARGIN_TARGET, MIN_COUNT, Share, Speed, lessons
from .misses import SUBJECT_TYPES, can_report, miss_report, subject_label, subject_of
from .models import LearningSettings, ReportedMiss, RiskModel


@login_required
def miss_report_view(request: HttpRequest) -> HttpResponse:
    """GET: the form (prefilled from ``?subject_type=&subject_id=``); POST: record the miss."""
    if not can_report(request.user):
        raise PermissionDenied("Your role may not report misses.")
    if request.method == "POST":
        form = MissForm(request.POST, user=request.user)
        if form.is_valid():
            data = form.cleaned_data
            day = data["missed_at"]
            missed_at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC) if day is not None else None
            try:
                miss = miss_report(
                    subject_type=data["subject_type"],
                    subject_id=data["subject_id"],
                    outcome=data["outcome"],
                    missed_at=min(missed_at, dt.datetime.now(dt.UTC)) if missed_at else None,
                    rule=data["rule"],
                    note=data["note"],
                    actor=request.user,
                )
            except PermissionDenied:
                form.add_error(None, "You may report misses only on your own clients' subjects.")
                return render(request, "learning/report_miss.html", {"form": form}, status=403)
            except ObjectDoesNotExist as exc:
                form.add_error(None, str(exc))
            except ValidationError as exc:
                form.add_error(None, "; ".join(exc.messages))
            else:
                messages.success(
                    request,
                    f"Miss recorded on {miss.subject_label}: "
                    "it will count when thresholds are next suggested.",
                )
                return redirect("learning-report-miss")
        return render(
            request, "learning/report_miss.html", {"form": form, "subject": form.subject_label}, status=400
        )
    given = {k: str(v) for k, v in request.GET.items() if k in ("subject_type", "subject_id")}
    form = MissForm(initial=given, user=request.user)
    recent = ReportedMiss.objects.select_related("rule", "reported_by")
    if not in_role(request.user, OPERATIONS, EXECUTIVES, ADMINISTRATORS):
        recent = recent.filter(reported_by_id=request.user.pk)  # an account manager sees their own
    return render(
        request,
        "learning/report_miss.html",
        {"form": form, "recent": recent[:20], "subject": _given_subject(given, request.user)},
    )


def _given_subject(given: dict[str, str], user: Any) -> str:
    """The name of the subject a link filled the form in for (empty when there is none, no such one, or
    one ``user`` may not report on: an account manager is never shown another's client by its number)."""
    subject_type, raw_id = given.get("subject_type", ""), given.get("subject_id", "")
    if subject_type not in SUBJECT_TYPES or not raw_id.isdigit():
        return ""
    try:
        subject = subject_of(subject_type, int(raw_id))
    except ObjectDoesNotExist:
        return ""
    return subject_label(subject_type, subject) if can_report(user, subject_type, subject) else ""


def _pct(value: float | None) -> str:
    return "—" if value is None else written(Decimal(f"{100 * value:.1f}"), kind="percent")


def _share(share: Share) -> dict[str, Any]:
    interval = share.interval
    return {
        "value": _pct(share.value) if share.enough else "too few to say",
        "interval": f"{_pct(interval[0])} – {_pct(interval[1])}" if interval and share.enough else "",
        "n": written(share.n, kind="int"),
        "hits": written(share.hits, kind="int"),
        # For the interval bar: x and width on a 0–120 scale.
        "bar": (
            {
                "x": round(120 * interval[0], 1),
                "w": round(120 * (interval[1] - interval[0]), 1),
                "dot": round(120 * (share.value or 0.0), 1),
            }
            if interval and share.enough
            else None
        ),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 3600:
        return f"{written(Decimal(round(seconds / 60)), kind='int')} min"
    if seconds < 72 * 3600:
        return f"{written(Decimal(f'{seconds / 3600:.1f}'))} h"
    return f"{written(Decimal(f'{seconds / 86400:.1f}'))} days"


def _speeds(speeds: list[Speed], link: str, param: str) -> list[dict[str, Any]]:
    return [
        {
            "label": s.label,
            "n": written(s.n, kind="int"),
            "p50": _duration(s.p50),
            "p90": _duration(s.p90),
            "href": f"{link}?{urlencode({param: s.key})}",
        }
        for s in speeds
    ]


@role_required(EXECUTIVES, OPERATIONS, ADMINISTRATORS)
def learned(request: HttpRequest) -> HttpResponse:
    """What Fulcrum learned from outcomes, for executives and operations managers."""
    period = request.GET.get("period", "365")
    days = {"90": 90, "365": 365, "all": None}.get(period, 365)
    since = timezone.now() - dt.timedelta(days=days) if days else None
    found = lessons(since=since)
    analytics = reverse("admin:learning_ruleanalytics_changelist")
    escalations = reverse("admin:escalations_escalation_changelist")
    rules = [
        {
            "key": r.rule_key,
            "name": r.rule_name,
            "escalations": written(r.escalations, kind="int"),
            "acted": _share(r.acted),
            "false_alarms": _share(r.false_alarms),
            "href": f"{analytics}?{urlencode({'rule': r.rule_key, 'period': 'all'})}",
        }
        for r in found.rules
    ]
    thresholds = [
        {
            "key": t.rule_key,
            "version": t.version,
            "live": t.live,
            "conditions": [
                f"{shape_of(fact).label or fact} {OPERATOR_WORDS.get(op, op)} {written(value, fact)}"
                for fact, op, value in t.thresholds
            ],
            "precision": _share(t.precision),
            "href": f"{analytics}?{urlencode({'rule': t.rule_key, 'period': 'all'})}",
        }
        for t in found.thresholds
    ]
    traits = [
        {
            "trait": t.trait,
            "with": written(t.with_trait, kind="int"),
            "without": written(t.without_trait, kind="int"),
            "margin_with": _share(t.margin_with),
            "margin_without": _share(t.margin_without),
            "on_time_with": _share(t.on_time_with),
            "on_time_without": _share(t.on_time_without),
        }
        for t in found.traits
    ]
    return render(
        request,
        "learning/learned.html",
        {
            "period": period if period in ("90", "365", "all") else "365",
            "rules": rules,
            "routes": _speeds(found.routes, escalations, "route__exact"),
            "approvers": _speeds(found.approvers, reverse("admin:audit_auditentry_changelist"), "q"),
            "traits": traits,
            "thresholds": thresholds,
            "projects_measured": written(found.projects_measured, kind="int"),
            "margin_target": written(MARGIN_TARGET, "project.margin_pct"),
            "projects_href": reverse("admin:entities_project_changelist"),
            "min_count": MIN_COUNT,
        },
    )


def _weight_row(name: str, weight: float) -> tuple[str, str, str]:
    """One weight in words: a fact's (``a higher value raises the risk``), or its missing-value
    indicator's (``Margin has no value`` — ``having no value lowers the risk``)."""
    missing = name.endswith("__missing")
    fact = name.removesuffix("__missing")
    label = shape_of(fact).label or fact
    effect = "raises" if weight > 0 else "lowers"
    if missing:
        return f"{label} has no value", f"{weight:+.2f}", f"having no value {effect} the risk"
    return label, f"{weight:+.2f}", f"a higher value {effect} the risk"


@role_required(EXECUTIVES, OPERATIONS, ADMINISTRATORS)
def risk_model_page(request: HttpRequest) -> HttpResponse:
    """The learned ranking's model: what it was trained on, how it did on a later period, its weights."""
    model = RiskModel.objects.order_by("-version").first()
    settings = LearningSettings.load()
    context: dict[str, Any] = {
        "model": model,
        "active": model is not None and model.n_samples >= settings.min_labels_for_ranking,
        "min_labels": settings.min_labels_for_ranking,
    }
    if model is not None:
        metrics = model.metrics or {}
        split = metrics.get("split") or {}
        weights = sorted(model.coefficients.items(), key=lambda kv: abs(kv[1]), reverse=True)
        context.update(
            split=split,
            cutoff=(split.get("cutoff") or "")[:10],
            holdout_auc=metrics.get("holdout_auc"),
            holdout_note=metrics.get("holdout_note", ""),
            cv_auc=metrics.get("cv_auc"),
            calibration=[
                {
                    "range": f"{_pct(b['from'])} – {_pct(b['to'])}",
                    "n": b["n"],
                    "predicted": _pct(b["predicted"]),
                    "observed": _pct(b["observed"]),
                }
                for b in metrics.get("calibration", [])
            ],
            weights=[_weight_row(name, weight) for name, weight in weights],
        )
    return render(request, "learning/model.html", context)
