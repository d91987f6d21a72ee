"""Admin for the learning loop: rule analytics, threshold suggestions, risk models, shadow sample, settings.

The learning models carry no role permissions of their own: whoever may read rules (operations
managers, executives, administrators) may read these pages, and whoever may change rules (operations
managers, administrators) may change the settings and apply or dismiss a suggestion.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.rules.admin import SubjectColumn, subject_links
from apps.rules.engine.ruleset import RulesFileError
from apps.rules.engine.wording import reading, shape_of, written
from apps.rules.evaluation.backtest import BacktestError
from apps.rules.models import Rule

from .analytics import Breakdown, rule_analytics, rules_fired_together
from .backtests import backtest_start, timeline_chart
from .models import BacktestRun, LearningSettings, RiskModel, RuleAnalytics, ShadowSample, ThresholdSuggestion
from .services import learning_settings_update
from .thresholds import SuggestionError, suggestion_apply, suggestion_dismiss

VIEW_RULES = "rules.view_rule"
CHANGE_RULES = "rules.change_rule"
PERIODS = {"30": 30, "90": 90, "365": 365, "all": None}


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _day(raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    return dt.datetime.combine(dt.date.fromisoformat(raw), dt.time.min, tzinfo=dt.UTC)


def _pct(value: float | None) -> str:
    return "—" if value is None else written(Decimal(f"{100 * value:.1f}"), kind="percent")


FIGURE_ROWS = (
    ("matches", "matches (stored contexts)"),
    ("positive", "labelled positives matched"),
    ("negative", "labelled negatives matched (false alarms)"),
    ("precision", "precision"),
    ("misses", "labelled positives missed"),
    ("shadow_misses", "estimated misses (shadow sample, weighted)"),
    ("shadow_false_alarms", "estimated false alarms (shadow sample, weighted)"),
    ("expected_cost", "expected cost"),
)


def _number(value: float | None) -> str:
    return "—" if value is None else written(Decimal(f"{value:g}"))


def _points(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "—"
    return f"{100 * (after - before):+.1f} points"


class _RulePermissions:
    """Read with ``rules.view_rule``, change with ``rules.change_rule``; nobody adds or deletes."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VIEW_RULES)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_RULES)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _row(b: Breakdown) -> dict[str, Any]:
    return {
        "label": b.label,
        "escalations": b.escalations,
        "labelled": b.labelled,
        "precision": _pct(b.precision),
        "false_alarm_ratio": _pct(b.false_alarm_ratio),
        "ack": f"{_hours(b.acknowledge.p50)} / {_hours(b.acknowledge.p90)}",
        "ack_n": b.acknowledge.n,
        "resolve": f"{_hours(b.resolve.p50)} / {_hours(b.resolve.p90)}",
        "resolve_n": b.resolve.n,
    }


@admin.register(RuleAnalytics)
class RuleAnalyticsAdmin(_RulePermissions, admin.ModelAdmin):
    """One page of analytics per rule version instead of a change list."""

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        rule_key = request.GET.get("rule") or None
        period = request.GET.get("period", "90")
        days = PERIODS.get(period, 90)
        since = timezone.now() - dt.timedelta(days=days) if days else None
        settings = LearningSettings.load()
        stats = rule_analytics(rule_key=rule_key, since=since)
        versions = [
            {
                "key": s.key,
                "fires": s.fires,
                "subjects": s.subjects,
                "repeat_ratio": _pct(s.repeat_ratio),
                "recall": _pct(s.recall),
                "recall_note": s.recall_note,
                "outcomes": sorted(s.outcomes.items()),
                "summary": _row(s),
                "by_route": [_row(b) for b in s.by_route],
                "by_account_manager": [_row(b) for b in s.by_account_manager],
            }
            for s in stats
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Rule analytics",
            "opts": self.model._meta,
            "versions": versions,
            "pairs": rules_fired_together(
                window=dt.timedelta(hours=settings.cofire_window_hours), rule_key=rule_key, since=since
            ),
            "window_hours": settings.cofire_window_hours,
            "rules": list(Rule.objects.order_by("key").values_list("key", flat=True)),
            "rule_key": rule_key or "",
            "period": period if period in PERIODS else "90",
            "periods": list(PERIODS),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/learning/analytics.html", context)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("backtest/", view(self.backtest_view), name="learning_backtest"),
            path("backtest/<int:run_id>/", view(self.backtest_run_view), name="learning_backtest_run"),
            *super().get_urls(),
        ]

    def _backtest_context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        figures = extra.get("figures")
        if figures:
            p, n = figures["precision"]
            lp, ln = figures["live_precision"]
            subject_type = figures["subject_type"]
            ids = [sid for sid, _, _ in figures["examples"]]
            ids += figures["newly_matching"] + figures["no_longer_matching"]
            links = {
                pk: (label, url) for pk, label, url in subject_links(subject_type, list(dict.fromkeys(ids)))
            }
            live = figures["live_version"]
            extra.update(
                heading=(
                    f"{figures['rule']}: its draft" + (f", beside live v{live}" if live else "")
                    if figures["is_draft"]
                    else f"{figures['rule']}: {figures['label']}"
                ),
                newly_matching=[links[pk] for pk in figures["newly_matching"]],
                no_longer_matching=[links[pk] for pk in figures["no_longer_matching"]],
                chart=timeline_chart(figures),
                precision=f"{_pct(p / (p + n) if p + n else None)} ({p} of {p + n})",
                live_precision=f"{_pct(lp / (lp + ln) if lp + ln else None)} ({lp} of {lp + ln})",
                recall=_pct(figures["recall"]),
                live_recall=_pct(figures["live_recall"]),
                examples=[
                    (
                        links[sid],
                        at[:16].replace("T", " "),
                        [
                            (shape_of(name).label or name, reading(v, name))
                            for name, v in sorted(values.items())
                        ],
                    )
                    for sid, at, values in figures["examples"]
                ],
                outcomes=[(name.replace("_", " "), n) for name, n in sorted(figures["outcomes"].items())],
            )
        return {
            **self.admin_site.each_context(request),
            "title": "Backtest",
            "opts": self.model._meta,
            "rules": list(Rule.objects.order_by("key").values_list("key", "name")),
            **extra,
        }

    def backtest_view(self, request: HttpRequest) -> HttpResponse:
        """A rule (live) or its draft over a period: inline when small, on a worker when large."""
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        key = request.GET.get("rule")
        context = self._backtest_context(
            request,
            rule_key=key or "",
            use_draft=request.GET.get("what") == "draft",
            since=request.GET.get("since", ""),
            until=request.GET.get("until", ""),
        )
        if not key:
            return TemplateResponse(request, "admin/learning/backtest.html", context)
        rule = Rule.objects.select_related("live_version").filter(key=key).first()
        if rule is None:
            messages.error(request, f"No rule {key!r}.")
            return TemplateResponse(request, "admin/learning/backtest.html", context, status=404)
        try:
            since = _day(request.GET.get("since"))
            until = _day(request.GET.get("until"))
            if until is not None:
                until += dt.timedelta(days=1)  # "until June 30" takes June 30 in
            if since is not None and until is not None and since >= until:
                raise ValueError("the period is empty: “From” is after “Until”")
            figures, run = backtest_start(
                rule=rule, use_draft=context["use_draft"], since=since, until=until, actor=request.user
            )
        except (ValueError, BacktestError, RulesFileError) as exc:
            messages.error(request, f"The backtest cannot run: {exc}")
            return TemplateResponse(request, "admin/learning/backtest.html", context, status=400)
        if run is not None:
            return HttpResponseRedirect(reverse("admin:learning_backtest_run", args=[run.pk]))
        context = self._backtest_context(request, **{**context, "figures": figures})
        return TemplateResponse(request, "admin/learning/backtest.html", context)

    def backtest_run_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        run = BacktestRun.objects.filter(pk=run_id).first()
        if run is None:
            return TemplateResponse(
                request, "admin/learning/backtest.html", self._backtest_context(request), status=404
            )
        context = self._backtest_context(
            request,
            run=run,
            rule_key=run.rule_key,
            use_draft=run.use_draft,
            since=f"{run.since:%Y-%m-%d}" if run.since else "",
            until=f"{run.until - dt.timedelta(days=1):%Y-%m-%d}" if run.until else "",
            figures=run.result,
            percent=round(100 * run.progress / run.expected) if run.expected else 0,
        )
        return TemplateResponse(request, "admin/learning/backtest.html", context)


@admin.register(ThresholdSuggestion)
class ThresholdSuggestionAdmin(_RulePermissions, admin.ModelAdmin):
    list_display = (
        "rule",
        "condition",
        "change",
        "matches",
        "precision",
        "expected_cost",
        "newly_matching",
        "no_longer_matching",
        "held_out",
        "status",
        "created_at",
    )
    list_filter = ("status",)
    list_select_related = ("rule", "rule_version")
    search_fields = ("rule__key", "fact")
    actions = ("apply_selected", "dismiss_selected")
    readonly_fields = ["figures", "held_out", *(f.name for f in ThresholdSuggestion._meta.fields)]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(CHANGE_RULES)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.sweep_view)
        return [path("sweep/", view, name="learning_thresholdsuggestion_sweep"), *super().get_urls()]

    def sweep_view(self, request: HttpRequest) -> HttpResponse:
        """Queue tonight's sweep now (after commit; the task is the same one beat runs)."""
        if request.method != "POST" or not request.user.has_perm(CHANGE_RULES):
            return HttpResponseForbidden("Only operators who may change rules start a sweep (POST).")
        from .tasks import suggest_thresholds

        transaction.on_commit(suggest_thresholds.delay)
        self.message_user(request, "Threshold sweep queued; new suggestions appear here when it finishes.")
        return HttpResponseRedirect(reverse("admin:learning_thresholdsuggestion_changelist"))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return super().get_actions(request) if request.user.has_perm(CHANGE_RULES) else {}

    @admin.display(description="current vs proposed")
    def figures(self, obj: ThresholdSuggestion) -> str:
        rows = []
        for key, label in FIGURE_ROWS:
            before, after = obj.current.get(key), obj.proposed.get(key)
            if key == "precision":
                shown = (_pct(before), _pct(after), _points(before, after))
            else:
                delta = "—" if before is None or after is None else f"{after - before:+g}"
                shown = (_number(before), _number(after), delta)
            rows.append((label, *shown))
        return format_html(
            "<table><tr><th></th><th>current ({})</th><th>proposed ({})</th><th>delta</th></tr>{}</table>",
            obj.current_value,
            obj.proposed_value,
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="learned on → judged on (held out)")
    def held_out(self, obj: ThresholdSuggestion) -> str:
        """Both periods of the time split, each with the current and the proposed threshold's figures."""
        v = obj.validation or {}
        rows = []
        for name, label in (("learn", "learned on"), ("holdout", "held out")):
            period = v.get(name) or {}
            cur, new = period.get("current") or {}, period.get("proposed") or {}
            first, last = (period.get("from") or "")[:10], (period.get("to") or "")[:10]
            span = f"{first} – {last} ({period.get('cases')} cases)"
            rows.append(
                (
                    label,
                    span,
                    f"{_pct(cur.get('false_alarm_ratio'))} → {_pct(new.get('false_alarm_ratio'))}",
                    f"{_number(cur.get('caught'))} → {_number(new.get('caught'))}",
                )
            )
        return format_html(
            "<table><tr><th></th><th>period</th><th>false-alarm ratio</th><th>true escalations kept</th>"
            "</tr>{}</table><p>{}</p>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
            v.get("reason", "validated before the time split existed"),
        )

    @admin.display(description="condition")
    def condition(self, obj: ThresholdSuggestion) -> str:
        return f"{obj.fact} {obj.op} (v{obj.rule_version.number}, {obj.path})"

    @admin.display(description="threshold")
    def change(self, obj: ThresholdSuggestion) -> str:
        return f"{obj.current_value} → {obj.proposed_value}"

    @admin.display(description="matches")
    def matches(self, obj: ThresholdSuggestion) -> str:
        return f"{obj.current['matches']} → {obj.proposed['matches']}"

    @admin.display(description="precision")
    def precision(self, obj: ThresholdSuggestion) -> str:
        return f"{_pct(obj.current['precision'])} → {_pct(obj.proposed['precision'])}"

    @admin.display(description="expected cost")
    def expected_cost(self, obj: ThresholdSuggestion) -> str:
        before, after = obj.current["expected_cost"], obj.proposed["expected_cost"]
        return f"{before:g} → {after:g} ({after - before:+g})"

    @admin.action(description="Apply: write the threshold into the rule's draft (publish it on the rule)")
    def apply_selected(self, request: HttpRequest, queryset: QuerySet[ThresholdSuggestion]) -> None:
        applied = 0
        for suggestion in queryset:
            try:
                suggestion_apply(suggestion=suggestion, actor=request.user)
            except SuggestionError as exc:
                self.message_user(request, f"{suggestion}: {exc}", messages.WARNING)
            else:
                applied += 1
        if applied:
            self.message_user(
                request, f"{applied} suggestion(s) written to draft(s); review and publish them on the rule."
            )

    @admin.action(description="Dismiss")
    def dismiss_selected(self, request: HttpRequest, queryset: QuerySet[ThresholdSuggestion]) -> None:
        for suggestion in queryset:
            suggestion_dismiss(suggestion=suggestion, actor=request.user)
        self.message_user(request, f"{queryset.count()} suggestion(s) handled.")


@admin.register(RiskModel)
class RiskModelAdmin(_RulePermissions, admin.ModelAdmin):
    list_display = ("version", "trained_at", "n_samples", "n_positive", "cv_auc")
    readonly_fields = (
        "version",
        "trained_at",
        "n_samples",
        "n_positive",
        "intercept",
        "metrics",
        "explanation",
    )
    exclude = ("features", "coefficients", "means", "scales")

    @admin.display(description="cross-validated AUC")
    def cv_auc(self, obj: RiskModel) -> str:
        value = obj.metrics.get("cv_auc")
        return "—" if value is None else f"{value:.3f}"

    @admin.display(description="coefficients (per standard deviation, log-odds)")
    def explanation(self, obj: RiskModel) -> str:
        rows = sorted(obj.coefficients.items(), key=lambda kv: abs(kv[1]), reverse=True)
        return format_html(
            "<table><tr><th>feature</th><th>coefficient</th><th>mean</th><th>std</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (name, f"{coef:+.3f}", f"{obj.means.get(name, '')}", f"{obj.scales.get(name, '')}")
                    for name, coef in rows
                ),
            ),
        )


@admin.register(ShadowSample)
class ShadowSampleAdmin(_RulePermissions, SubjectColumn, admin.ModelAdmin):
    """Random unflagged subjects; a sample names the rule whose escalation later labelled it a miss."""

    list_display = ("subject", "subject_type", "rule", "sampled_at", "weight", "positive", "labelled_at")
    list_filter = ("subject_type", "positive")
    list_select_related = ("escalation__rule",)
    show_full_result_count = False
    readonly_fields = ["subject", "rule", *(f.name for f in ShadowSample._meta.fields)]

    @admin.display(description="rule", ordering="escalation__rule__key")
    def rule(self, obj: ShadowSample) -> str:
        return obj.rule_words


@admin.register(LearningSettings)
class LearningSettingsAdmin(_RulePermissions, admin.ModelAdmin):
    """A singleton: the change list goes straight to the one row."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(CHANGE_RULES)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        obj = LearningSettings.load()
        return HttpResponseRedirect(reverse("admin:learning_learningsettings_change", args=[obj.pk]))

    def save_model(self, request: HttpRequest, obj: LearningSettings, form: Any, change: bool) -> None:
        learning_settings_update(
            settings=obj,
            changed=list(form.changed_data),
            actor=request.user,
        )
