from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import F, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.rules.authoring.diff import spec_diff, spec_yaml
from apps.rules.authoring.editor import describe
from apps.rules.authoring.forms import RuleEditorForm
from apps.rules.authoring.preview import PreviewResult, needs_confirmation, preview_draft
from apps.rules.authoring.versions import rule_draft_save, rule_restore
from apps.rules.engine.ruleset import RulesFileError
from apps.rules.evaluation.shadow import rule_shadow_start, rule_shadow_stop, shadow_evaluate
from apps.rules.models import Decision, EvaluationRun, Rule, RulesSettings, RuleVersion, SubjectState

# Where a subject of each type opens in admin (samples on the preview and shadow pages).
SUBJECT_ADMIN = {
    "change_order": ("entities", "changeorder"),
    "project": ("entities", "project"),
    "client": ("entities", "client"),
    "submittal": ("entities", "submittal"),
    "document": ("entities", "document"),
}


def subject_links(subject_type: str, ids: list[int]) -> list[tuple[int, str, str]]:
    """``[(id, label, admin url)]`` with one query for the labels."""
    from django.apps import apps

    app_label, model_name = SUBJECT_ADMIN[subject_type]
    model = apps.get_model(app_label, model_name)
    found = model._default_manager.in_bulk(ids)
    return [
        (
            pk,
            str(found[pk]) if pk in found else f"#{pk}",
            reverse(f"admin:{app_label}_{model_name}_change", args=[pk]),
        )
        for pk in ids
    ]


class SubjectColumn:
    """A ``subject`` column with the subject's name linked to its page, not its id: the labels of a
    changelist page are read with one query per subject type (``get_changelist_instance``)."""

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)  # type: ignore[misc]
        ids: dict[str, list[int]] = defaultdict(list)
        rows = list(changelist.result_list)  # evaluates (and caches) the page's queryset
        for row in rows:
            ids[row.subject_type].append(row.subject_id)
        links = {
            (subject_type, pk): (label, url)
            for subject_type, pks in ids.items()
            if subject_type in SUBJECT_ADMIN
            for pk, label, url in subject_links(subject_type, pks)
        }
        for row in rows:
            row._subject_link = links.get((row.subject_type, row.subject_id))
        return changelist

    @admin.display(description="subject", ordering="subject_id")
    def subject(self, obj: Any) -> str:
        link = getattr(obj, "_subject_link", None)
        if link is None and obj.subject_type in SUBJECT_ADMIN:  # a page other than the changelist
            [(_, *link)] = subject_links(obj.subject_type, [obj.subject_id])
        if link is None:
            return f"{obj.subject_type} #{obj.subject_id}"
        label, url = link
        return format_html('<a href="{}">{}</a>', url, label)


class VersionInline(admin.TabularInline):
    model = RuleVersion
    extra = 0
    can_delete = False
    fields = ("number", "published_at", "published_by", "spec_hash")
    readonly_fields = fields
    ordering = ("-number",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RuleVersion]:
        return super().get_queryset(request).select_related("published_by")


_EDIT_FIELDSETS = (
    (None, {"fields": ("key", "name", "description", "subject", "enabled")}),
    ("Conditions", {"fields": ("when",)}),
    (
        "What happens on a match",
        {"fields": ("route", "severity", "priority", "actions", "cooldown", "max_fact_age", "auto_resolve")},
    ),
    ("Preview and shadow", {"fields": ("status", "publish_run", "shadow_summary")}),
)
_VIEW_FIELDSETS = (
    (None, {"fields": ("key", "name", "subject_type", "enabled")}),
    ("Draft", {"fields": ("conditions", "draft_yaml")}),
    ("Preview and shadow", {"fields": ("status", "publish_run", "shadow_summary")}),
)


def _local(moment: Any) -> str:
    """A time as every admin page shows it: in ``TIME_ZONE`` (Django's own columns are localised too)."""
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M}"


def _run_summary(run: EvaluationRun) -> str:
    if run.state != "complete":
        return run.state
    return f"complete, {run.subjects:,} subjects, {int(run.progress.get('opened', 0)):,} escalations opened"


class DraftStateFilter(admin.SimpleListFilter):
    """Which drafts wait for a publish: the operational question on the rules list."""

    title = "draft"
    parameter_name = "draft"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("unpublished", "never published"),
            ("changed", "changed since live"),
            ("same", "same as live"),
            ("shadow", "in shadow"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Rule]) -> QuerySet[Rule]:
        same = Q(live_version__isnull=False, draft=F("live_version__spec"))
        match self.value():
            case "unpublished":
                return queryset.filter(live_version__isnull=True)
            case "changed":
                return queryset.filter(live_version__isnull=False).exclude(same)
            case "same":
                return queryset.filter(same)
            case "shadow":
                return queryset.filter(shadow_since__isnull=False)
        return queryset


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    """The rule editor: draft, preview, publish (with confirmation), versions and their diff, shadow."""

    form = RuleEditorForm
    list_display = (
        "key",
        "name",
        "subject_type",
        "enabled",
        "live",
        "draft_state",
        "in_shadow",
        "updated_at",
    )
    list_filter = (DraftStateFilter, "subject_type", "enabled")
    list_select_related = ("live_version",)
    search_fields = ("key", "name")
    inlines = [VersionInline]
    actions = ["publish"]
    readonly_fields = ("status", "publish_run", "shadow_summary", "conditions", "draft_yaml")

    # --- pages --------------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Rule | None = None) -> Any:
        if obj is not None and not self.has_change_permission(request, obj):
            return _VIEW_FIELDSETS
        if obj is None:
            return _EDIT_FIELDSETS[:3]
        return _EDIT_FIELDSETS

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/preview/", view(self.preview_view), name="rules_rule_preview"),
            path("<path:object_id>/publish/", view(self.publish_view), name="rules_rule_publish"),
            path("<path:object_id>/versions/", view(self.versions_view), name="rules_rule_versions"),
            path(
                "<path:object_id>/versions/<int:number>/restore/",
                view(self.restore_view),
                name="rules_rule_restore",
            ),
            path("<path:object_id>/shadow/", view(self.shadow_view), name="rules_rule_shadow"),
            *super().get_urls(),
        ]

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        rule_draft_save(rule=obj, draft=form.cleaned_data["draft"], enabled=obj.enabled, actor=request.user)

    # --- columns and read-only fields -------------------------------------------------------------------

    @admin.display(description="live", ordering="live_version__number")
    def live(self, obj: Rule) -> str:
        return f"v{obj.live_version.number}" if obj.live_version else "—"

    @admin.display(description="draft")
    def draft_state(self, obj: Rule) -> str:
        if obj.live_version is None:
            return "never published"
        return "same as live" if obj.draft == obj.live_version.spec else "changed"

    @admin.display(description="shadow", boolean=True)
    def in_shadow(self, obj: Rule) -> bool:
        return obj.shadow_since is not None

    @admin.display(description="draft")
    def status(self, obj: Rule) -> str:
        if obj.pk is None:
            return "—"
        live = obj.live_version
        if live is None:
            state = "never published"
        elif live.spec == obj.draft:
            state = f"same as live v{live.number}"
        else:
            state = f"changed since live v{live.number}: preview it, then publish"
        links = format_html_join(
            " · ",
            '<a href="{}">{}</a>',
            [
                (reverse("admin:rules_rule_preview", args=[obj.pk]), "Preview"),
                (reverse("admin:rules_rule_versions", args=[obj.pk]), "Versions and diff"),
                (reverse("admin:rules_rule_shadow", args=[obj.pk]), "Shadow mode"),
            ],
        )
        return format_html("{} — {}", state, links)

    @admin.display(description="last publish")
    def publish_run(self, obj: Rule) -> str:
        if obj.pk is None:
            return "—"
        run = (
            EvaluationRun.objects.filter(published_versions__rule=obj)
            .defer("subject_ids", "ages")
            .order_by("-queued_at", "-pk")
            .first()
        )
        if run is None:
            return "not evaluated by a publish yet"
        return format_html(
            '<a href="{}">{} run queued {}</a>: {}',
            reverse("admin:rules_evaluationrun_change", args=[run.pk]),
            run.subject_type.replace("_", " "),
            _local(run.queued_at) if run.queued_at else "",
            _run_summary(run),
        )

    @admin.display(description="latest shadow run")
    def shadow_summary(self, obj: Rule) -> str:
        if obj.pk is None:
            return "—"
        run = obj.shadow_runs.select_related("live_version").first()
        since = f"in shadow since {_local(obj.shadow_since)}" if obj.shadow_since else "not in shadow"
        if run is None:
            return f"{since}; no run yet"
        ran = _local(run.ran_at)
        if run.error:
            return f"{since}; {ran}: the draft could not be evaluated: {run.error}"
        against = f"v{run.live_version.number}" if run.live_version else "no live version"
        return (
            f"{since}; {ran}: would match {run.would_match} of {run.subjects} "
            f"(against {against}: {run.added} added, {run.removed} removed)"
        )

    @admin.display(description="conditions")
    def conditions(self, obj: Rule) -> str:
        lines = describe(obj.draft.get("when")) if isinstance(obj.draft, dict) else []
        return format_html_join("", '<div class="rule-depth-{}">{}</div>', lines)

    @admin.display(description="draft as YAML")
    def draft_yaml(self, obj: Rule) -> str:
        return format_html("<pre>{}</pre>", spec_yaml(obj.draft) if isinstance(obj.draft, dict) else "")

    # --- helpers ----------------------------------------------------------------------------------------

    def _rule(self, request: HttpRequest, object_id: str, *, change: bool) -> Rule:
        rule = self.get_object(request, object_id)
        if rule is None:
            raise Http404("no such rule")
        allowed = (
            self.has_change_permission(request, rule) if change else self.has_view_permission(request, rule)
        )
        if not allowed:
            raise PermissionDenied
        return rule

    def _context(self, request: HttpRequest, rule: Rule, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": rule,
            "rule": rule,
            "title": title,
            "has_change_permission": self.has_change_permission(request, rule),
            "change_url": reverse("admin:rules_rule_change", args=[rule.pk]),
            **extra,
        }

    def _preview(self, request: HttpRequest, rule: Rule) -> PreviewResult | None:
        try:
            return preview_draft(rule)
        except RulesFileError as exc:
            self.message_user(request, f"{rule.key}: the draft is not a valid rule: {exc}", messages.ERROR)
            return None

    def _preview_context(self, result: PreviewResult) -> dict[str, Any]:
        outcomes = ("matched", "not_matched", "insufficient_data")
        return {
            "result": result,
            "rows": [
                (o.replace("_", " "), result.counts.get(o, 0), result.live_counts.get(o)) for o in outcomes
            ],
            "samples": subject_links(result.subject_type, result.samples),
            "added": subject_links(result.subject_type, result.new),
            "removed": subject_links(result.subject_type, result.gone),
            "estimate_sentence": result.estimate.sentence(result.subject_type) if result.estimate else "",
        }

    # --- preview and publish ------------------------------------------------------------------------

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        rule = self._rule(request, object_id, change=False)
        result = self._preview(request, rule)
        if result is None:
            return HttpResponseRedirect(reverse("admin:rules_rule_change", args=[rule.pk]))
        threshold = RulesSettings.load().publish_confirm_threshold
        context = self._context(
            request,
            rule,
            f"Preview of {rule.key}",
            threshold=threshold,
            confirm=needs_confirmation(result, threshold),
            **self._preview_context(result),
        )
        return TemplateResponse(request, "admin/rules/rule/preview.html", context)

    def publish_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the preview and a Publish button. POST: publish, unless the preview crosses the
        threshold and the form did not carry the explicit confirmation."""
        rule = self._rule(request, object_id, change=True)
        result = self._preview(request, rule)
        change_url = reverse("admin:rules_rule_change", args=[rule.pk])
        if result is None:
            return HttpResponseRedirect(change_url)
        threshold = RulesSettings.load().publish_confirm_threshold
        confirm = needs_confirmation(result, threshold)
        if request.method == "POST" and (not confirm or request.POST.get("confirm") == "yes"):
            runs = self._publish([rule], request)
            # Straight to the run publishing queued: the operator watches it open the escalations.
            return HttpResponseRedirect(
                reverse("admin:rules_evaluationrun_change", args=[runs[0].pk]) if runs else change_url
            )
        context = self._context(
            request,
            rule,
            f"Publish {rule.key}?",
            threshold=threshold,
            confirm=confirm,
            asked=request.method == "POST",
            **self._preview_context(result),
        )
        return TemplateResponse(request, "admin/rules/rule/publish.html", context)

    def _publish(self, rules: list[Rule], request: HttpRequest) -> list[EvaluationRun]:
        """Publish each rule; returns the runs publishing queued (one per new version of an enabled
        rule)."""
        from apps.rules.evaluation.services import rule_publish

        runs: list[EvaluationRun] = []
        for rule in rules:
            try:
                version = rule_publish(rule=rule, actor=request.user)
            except RulesFileError as exc:
                self.message_user(request, f"{rule.key}: not published: {exc}", messages.ERROR)
                continue
            # None: the draft equals the live version (nothing new), or the rule is disabled.
            run = version.publish_runs.filter(completed_at__isnull=True).order_by("-pk").first()
            if run is None:
                self.message_user(request, f"{rule.key}: v{version.number} is live.", messages.SUCCESS)
                continue
            runs.append(run)
            self.message_user(
                request,
                format_html(
                    '{}: v{} is live. A worker is evaluating every {} now: <a href="{}">follow the run</a>.',
                    rule.key,
                    version.number,
                    run.subject_type.replace("_", " "),
                    reverse("admin:rules_evaluationrun_change", args=[run.pk]),
                ),
                messages.SUCCESS,
            )
        return runs

    @admin.action(
        description="Publish the draft of the selected rules as new versions", permissions=["change"]
    )
    def publish(self, request: HttpRequest, queryset: QuerySet[Rule]) -> HttpResponse | None:
        rules = list(queryset.select_related("live_version"))
        threshold = RulesSettings.load().publish_confirm_threshold
        previews = [(rule, self._preview(request, rule)) for rule in rules]
        valid = [(rule, result) for rule, result in previews if result is not None]
        risky = [(rule, result) for rule, result in valid if needs_confirmation(result, threshold)]
        if risky and request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Publish these rules?",
                "threshold": threshold,
                "risky": risky,
                "rules": [rule for rule, _ in valid],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/rules/rule/publish_confirmation.html", context)
        self._publish([rule for rule, _ in valid], request)
        return None

    # --- versions ---------------------------------------------------------------------------------------

    def versions_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        rule = self._rule(request, object_id, change=False)
        versions = list(rule.versions.select_related("published_by").order_by("-number"))
        by_number = {str(v.number): v for v in versions}
        specs: dict[str, tuple[str, dict[str, Any]]] = {n: (f"v{n}", v.spec) for n, v in by_number.items()}
        specs["draft"] = ("draft", rule.draft)
        live = str(rule.live_version.number) if rule.live_version else None
        default_old = live or (str(versions[1].number) if len(versions) > 1 else None)
        old_key = request.GET.get("old", default_old or "")
        new_key = request.GET.get("new", "draft")
        if new_key not in specs:
            new_key = "draft"
        old = specs.get(old_key)
        new_label, new_spec = specs[new_key]
        diff = spec_diff(
            old[1] if old else None, new_spec, old_label=old[0] if old else "(nothing)", new_label=new_label
        )
        context = self._context(
            request,
            rule,
            f"Versions of {rule.key}",
            versions=versions,
            choices=[("draft", "draft"), *[(n, f"v{n}") for n in by_number]],
            old_key=old_key,
            new_key=new_key,
            diff=diff,
            live=live,
        )
        return TemplateResponse(request, "admin/rules/rule/versions.html", context)

    def restore_view(self, request: HttpRequest, object_id: str, number: int) -> HttpResponse:
        rule = self._rule(request, object_id, change=True)
        version = get_object_or_404(RuleVersion, rule=rule, number=number)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:rules_rule_versions", args=[rule.pk]))
        rule_restore(rule=rule, version=version, actor=request.user)
        self.message_user(
            request,
            f"{rule.key}: v{number} is now the draft. Preview and publish it to make it live.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:rules_rule_change", args=[rule.pk]))

    # --- shadow -----------------------------------------------------------------------------------------

    def shadow_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        rule = self._rule(request, object_id, change=request.method == "POST")
        if request.method == "POST":
            action = request.POST.get("do")
            try:
                if action == "start":
                    rule_shadow_start(rule=rule, actor=request.user)
                    self.message_user(
                        request, f"{rule.key}: the draft runs in shadow nightly.", messages.SUCCESS
                    )
                elif action == "stop":
                    rule_shadow_stop(rule=rule, actor=request.user)
                    self.message_user(request, f"{rule.key}: shadow mode stopped.", messages.SUCCESS)
                elif action == "run":
                    shadow_evaluate(rules=[rule])
                    self.message_user(request, f"{rule.key}: shadow run stored.", messages.SUCCESS)
            except RulesFileError as exc:
                self.message_user(
                    request, f"{rule.key}: the draft is not a valid rule: {exc}", messages.ERROR
                )
            return HttpResponseRedirect(reverse("admin:rules_rule_shadow", args=[rule.pk]))
        runs = list(rule.shadow_runs.select_related("live_version")[:20])
        latest = runs[0] if runs else None
        context = self._context(
            request,
            rule,
            f"Shadow mode of {rule.key}",
            runs=runs,
            latest=latest,
            samples=subject_links(latest.subject_type, latest.sample_ids) if latest else [],
            added=subject_links(latest.subject_type, latest.added_ids) if latest else [],
            removed=subject_links(latest.subject_type, latest.removed_ids) if latest else [],
        )
        return TemplateResponse(request, "admin/rules/rule/shadow.html", context)


@admin.register(RuleVersion)
class RuleVersionAdmin(admin.ModelAdmin):
    """Immutable: decisions point at these."""

    list_display = ("rule", "number", "published_at", "published_by")
    list_select_related = ("rule", "published_by")
    readonly_fields = [f.name for f in RuleVersion._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RulesSettings)
class RulesSettingsAdmin(admin.ModelAdmin):
    """The one settings row; administrators set the publish confirmation threshold here."""

    list_display = ("__str__", "publish_confirm_threshold")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not RulesSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Decision)
class DecisionAdmin(SubjectColumn, admin.ModelAdmin):
    list_display = (
        "evaluated_at",
        "rule_version",
        "subject_type",
        "subject",
        "outcome",
        "suppressed",
        "trigger",
    )
    list_filter = ("outcome", "subject_type", "trigger")
    list_select_related = ("rule_version__rule",)
    readonly_fields = [f.name for f in Decision._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    """Bulk runs: what each rule found and how many decisions it traced; the rest were repeats. A run
    publishing queued is followed here live: its page reloads until the run is complete."""

    list_display = (
        "evaluated_at",
        "subject_type",
        "trigger",
        "state",
        "subjects",
        "traced",
        "opened",
        "completed_at",
    )
    list_filter = ("subject_type", "trigger")
    fields = (
        "state",
        "evaluated_at",
        "completed_at",
        "subject_type",
        "trigger",
        "published",
        "subjects",
        "progress_line",
        "outcome_table",
        "opened_escalations",
        "ages",
    )
    readonly_fields = fields
    show_full_result_count = False
    REFRESH_SECONDS = 2

    def get_queryset(self, request: HttpRequest) -> QuerySet[EvaluationRun]:
        return super().get_queryset(request).defer("subject_ids")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        running = run is not None and self._state(run) in ("queued", "evaluating")
        extra = {**(extra_context or {}), "refresh_seconds": self.REFRESH_SECONDS if running else 0}
        return super().change_view(request, object_id, form_url, extra)

    @staticmethod
    def _state(run: EvaluationRun) -> str:
        """The run's state, where an unfinished run older than a task may live stopped part-way (its
        worker died or tracing failed; the next run traces again)."""
        from apps.rules.authoring.publishing import stale_after

        state = run.state
        if state == "evaluating" and run.evaluated_at < timezone.now() - stale_after():
            return "incomplete"
        return state

    @admin.display(description="state")
    def state(self, run: EvaluationRun) -> str:
        match self._state(run):
            case "failed":
                return f"failed: {run.error}"
            case "queued":
                return "queued: waiting for a worker"
            case "evaluating":
                return "evaluating…"
            case "incomplete":
                return "incomplete: it stopped before its traces and snapshots were all written"
        return "complete"

    @admin.display(description="decisions traced")
    def traced(self, run: EvaluationRun) -> int:
        return sum(int(counts.get("decisions", 0)) for counts in run.outcomes)

    @admin.display(description="escalations opened")
    def opened(self, run: EvaluationRun) -> int | str:
        return int(run.progress["opened"]) if "opened" in run.progress else "—"

    @admin.display(description="published")
    def published(self, run: EvaluationRun) -> str:
        versions = run.published_versions.select_related("rule").order_by("rule__key")
        if not versions:
            return "—"
        return format_html_join(
            ", ",
            '<a href="{}">{} v{}</a>',
            ((reverse("admin:rules_rule_change", args=[v.rule_id]), v.rule.key, v.number) for v in versions),
        )

    @admin.display(description="progress")
    def progress_line(self, run: EvaluationRun) -> str:
        p = run.progress
        if run.state == "queued":
            return "not started"
        if not p:
            return "evaluating every live rule in SQL…" if run.state == "evaluating" else "—"
        return (
            f"{p.get('traced', 0):,} of {p.get('to_trace', 0):,} subjects with a match or a change traced; "
            f"escalations opened {p.get('opened', 0):,}, re-fired {p.get('refired', 0):,}, "
            f"suppressed {p.get('suppressed', 0):,}, auto-resolved {p.get('auto_resolved', 0):,}"
        )

    @admin.display(description="escalations it opened")
    def opened_escalations(self, run: EvaluationRun) -> str:
        from apps.escalations.models import Escalation

        if run.state == "queued":
            return "—"
        # A run's escalations open at its evaluation time (``escalations_fire(now=...)``).
        opened = Escalation.objects.filter(
            subject_type=run.subject_type, opened_at=run.evaluated_at
        ).select_related("rule")
        shown = list(opened.order_by("pk")[:100])
        if not shown:
            return "none yet" if run.state == "evaluating" else "none"
        items = format_html_join(
            "",
            '<li><a href="{}">#{} {}</a> · {} · {}</li>',
            (
                (
                    reverse("admin:escalations_escalation_change", args=[e.pk]),
                    e.pk,
                    e.subject_label,
                    e.rule.key,
                    e.route,
                )
                for e in shown
            ),
        )
        more = len(shown) == 100 and opened.count() > 100
        return format_html('<ul class="run-escalations">{}</ul>{}', items, " and more" if more else "")

    @admin.display(description="outcomes per rule")
    def outcome_table(self, run: EvaluationRun) -> str:
        columns = ("matched", "not_matched", "insufficient_data", "decisions")
        return format_html(
            "<table><tr><th>rule</th>{}</tr>{}</table>",
            format_html_join("", "<th>{}</th>", ((c.replace("_", " "),) for c in columns)),
            format_html_join(
                "",
                "<tr><td>{} v{}</td>{}</tr>",
                (
                    (
                        counts.get("rule"),
                        counts.get("version"),
                        format_html_join("", "<td>{}</td>", ((counts.get(c, 0),) for c in columns)),
                    )
                    for counts in run.outcomes
                ),
            ),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SubjectState)
class SubjectStateAdmin(SubjectColumn, admin.ModelAdmin):
    """Cooldowns and snoozes per (rule, subject); a snooze needs an expiry and a reason."""

    list_display = ("rule", "subject_type", "subject", "last_outcome", "cooldown_until", "snoozed_until")
    list_filter = ("last_outcome", "subject_type")
    list_select_related = ("rule",)
    readonly_fields = (
        "rule",
        "subject_type",
        "subject_id",
        "last_outcome",
        "last_evaluated_at",
        "cooldown_until",
    )
    fields = (*readonly_fields, "snoozed_until", "snooze_reason")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: SubjectState, form: Any, change: bool) -> None:
        obj.snoozed_by_id = request.user.pk if obj.snoozed_until else None
        super().save_model(request, obj, form, change)


from . import custom_admin  # noqa: E402, F401  (operator-defined facts)
