from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Decision, Rule, RuleVersion, SubjectState


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = ("key", "enabled", "draft")

    def clean(self) -> dict:
        from .ruleset import RulesFileError, rule_from_dict

        data = super().clean() or {}
        draft = data.get("draft")
        if isinstance(draft, dict):
            draft = {**draft, "key": data.get("key") or draft.get("key")}
            try:
                spec = rule_from_dict(draft)
            except RulesFileError as exc:
                raise forms.ValidationError(
                    [p.message if not p.path else f"{p.path}: {p.message}" for p in exc.errors]
                ) from exc
            data["draft"] = spec.to_dict()
            self.instance.name = spec.name
            self.instance.subject_type = spec.subject
        return data


class VersionInline(admin.TabularInline):
    model = RuleVersion
    extra = 0
    can_delete = False
    fields = ("number", "published_at", "published_by", "spec_hash")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ("key", "name", "subject_type", "enabled", "live_version", "updated_at")
    list_filter = ("subject_type", "enabled")
    list_select_related = ("live_version",)
    search_fields = ("key", "name")
    inlines = [VersionInline]
    actions = ["publish"]

    @admin.action(
        description="Publish the draft of the selected rules as new versions", permissions=["change"]
    )
    def publish(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        from .services import rule_publish

        published = [rule_publish(rule=rule, actor=request.user) for rule in queryset]
        self.message_user(request, f"{len(published)} rule(s) published.", messages.SUCCESS)


@admin.register(RuleVersion)
class RuleVersionAdmin(admin.ModelAdmin):
    """Immutable: decisions point at these."""

    list_display = ("rule", "number", "published_at", "published_by")
    list_select_related = ("rule", "published_by")
    readonly_fields = [f.name for f in RuleVersion._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    list_display = (
        "evaluated_at",
        "rule_version",
        "subject_type",
        "subject_id",
        "outcome",
        "suppressed",
        "trigger",
    )
    list_filter = ("outcome", "subject_type", "trigger")
    list_select_related = ("rule_version__rule",)
    readonly_fields = [f.name for f in Decision._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SubjectState)
class SubjectStateAdmin(admin.ModelAdmin):
    """Cooldowns and snoozes per (rule, subject); a snooze needs an expiry and a reason."""

    list_display = ("rule", "subject_type", "subject_id", "last_outcome", "cooldown_until", "snoozed_until")
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

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        obj.snoozed_by = request.user if obj.snoozed_until else None
        super().save_model(request, obj, form, change)
