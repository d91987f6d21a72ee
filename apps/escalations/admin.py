import itertools
import json

from django import forms
from django.contrib import admin, messages
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import (
    Delivery,
    Escalation,
    EscalationEvent,
    EscalationPolicy,
    PolicyLevel,
    SuppressedNotification,
)


class EventInline(admin.TabularInline):
    model = EscalationEvent
    extra = 0
    can_delete = False
    readonly_fields = ("created_at", "kind", "actor", "via", "note")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


def delivery_what(delivery: Delivery) -> str:
    """``Note in CRM → Acme Builders`` rather than ``note_crm → 1:5100145159``."""
    from .actions import action_words, target_words

    target = target_words(delivery.action, delivery.target, delivery.escalation)
    return f"{action_words(delivery.action)} → {target}"


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    readonly_fields = (
        "what",
        "action",
        "target",
        "state",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "last_error",
    )
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="what")
    def what(self, delivery: Delivery) -> str:
        return delivery_what(delivery)


class SuppressedInline(admin.TabularInline):
    model = SuppressedNotification
    extra = 0
    can_delete = False
    readonly_fields = ("created_at", "action", "target", "reason", "detail", "deferred_until")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


# The evidence an escalation opened on is shown as such, whether the row keeps a copy (older escalations) or
# its opening decision holds it: the two fields it comes from are not shown apart (a new escalation's copy
# is empty).
_OPENING_FIELDS = ("opened_evidence", "opened_decision")
# So is the evidence it last fired on (``Escalation.evidence``): a copy (older escalations) or a decision's.
_EVIDENCE_FIELDS = ("evidence_copy", "evidence_decision")


@admin.register(Escalation)
class EscalationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "rule",
        "subject_label",
        "client",
        "route",
        "severity",
        "status",
        "outcome",
        "fire_count",
        "opened_at",
        "policy_progress",
        "next_step_at",
    )
    list_filter = ("status", "route", "severity", "rule")
    list_select_related = ("rule", "client")
    search_fields = ("subject_label", "client__name")
    exclude = (*_OPENING_FIELDS, *_EVIDENCE_FIELDS)
    readonly_fields = [
        *(f.name for f in Escalation._meta.fields if f.name not in (*_OPENING_FIELDS, *_EVIDENCE_FIELDS)),
        "current_evidence",
        "evidence_when_opened",
    ]
    inlines = [EventInline, DeliveryInline, SuppressedInline]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Escalation]:
        return Escalation.objects.visible_to(request.user).select_related("rule", "client")

    @admin.display(description="evidence")
    def current_evidence(self, obj: Escalation) -> str:
        return json.dumps(obj.evidence, cls=DjangoJSONEncoder, ensure_ascii=False)

    @admin.display(description="evidence when it opened")
    def evidence_when_opened(self, obj: Escalation) -> str:
        return json.dumps(obj.opening_evidence, cls=DjangoJSONEncoder, ensure_ascii=False)

    @admin.display(description="policy")
    def policy_progress(self, obj: Escalation) -> str:
        levels = (obj.policy_snapshot or {}).get("levels") or []
        if not levels:
            return "—"
        reminders = f", {obj.policy_reminders} reminder(s)" if obj.policy_reminders else ""
        return f"{obj.policy_snapshot.get('name')}: level {obj.policy_level}/{len(levels)}{reminders}"


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The outbox; dead rows are the dead-letter list, with replay."""

    list_display = (
        "id",
        "escalation",
        "what",
        "target",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
    )
    list_filter = ("state", "action")
    list_select_related = ("escalation__client", "escalation__project", "escalation__rule")
    readonly_fields = [f.name for f in Delivery._meta.fields]
    actions = ["replay"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    @admin.display(description="what")
    def what(self, delivery: Delivery) -> str:
        return delivery_what(delivery)

    @admin.action(description="Replay selected failed or dead deliveries", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        from .delivery import delivery_replay

        replayable = queryset.filter(state__in=[Delivery.State.DEAD, Delivery.State.FAILED])
        count = sum(delivery_replay(delivery=delivery, actor=request.user) for delivery in replayable)
        self.message_user(request, f"{count} deliveries queued again.", messages.SUCCESS)


class LevelFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        waits = sorted(
            (form.cleaned_data["position"], form.cleaned_data["wait_hours"])
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("position") is not None
            and form.cleaned_data.get("wait_hours") is not None
        )
        # Waits count from when the escalation opened, so a later level must wait at least as long.
        for (_, earlier), (position, later) in itertools.pairwise(waits):
            if later < earlier:
                raise forms.ValidationError(
                    f"Level {position} waits {later} business hours, less than the level before it "
                    f"({earlier}); waits count from when the escalation opened."
                )


class LevelInline(admin.TabularInline):
    model = PolicyLevel
    formset = LevelFormSet
    extra = 1
    fields = (
        "position",
        "wait_hours",
        "condition",
        "target",
        "group",
        "address",
        "repeat_hours",
        "max_repeats",
    )


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(admin.ModelAdmin):
    """Escalation policies; an escalation freezes its route's policy when it opens."""

    list_display = ("name", "route_label", "business_hours", "level_count", "digest_executives")
    inlines = [LevelInline]
    fieldsets = (
        (None, {"fields": ("name", "description", "route", "digest_executives")}),
        ("Business hours", {"fields": ("business_days", "day_start", "day_end", "timezone")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[EscalationPolicy]:
        from django.db.models import Count

        return super().get_queryset(request).annotate(levels_n=Count("levels"))

    @admin.display(description="route")
    def route_label(self, obj: EscalationPolicy) -> str:
        return obj.route or "default (any route without its own policy)"

    @admin.display(description="business hours")
    def business_hours(self, obj: EscalationPolicy) -> str:
        return f"days {obj.business_days}, {obj.day_start}:00–{obj.day_end}:00 {obj.timezone or ''}".strip()

    @admin.display(description="levels", ordering="levels_n")
    def level_count(self, obj: EscalationPolicy) -> int:
        return obj.levels_n  # type: ignore[attr-defined]


class ReasonFilter(admin.SimpleListFilter):
    title = "reason"
    parameter_name = "reason"

    def lookups(self, request, model_admin):
        return SuppressedNotification.Reason.choices

    def queryset(self, request, queryset):
        return queryset.filter(reason=self.value()) if self.value() else queryset


@admin.register(SuppressedNotification)
class SuppressedNotificationAdmin(admin.ModelAdmin):
    """Every notification the noise controls held back, deferred or batched, with its reason."""

    list_display = ("created_at", "escalation", "action", "target", "reason", "detail", "deferred_until")
    list_filter = (ReasonFilter, "action")
    list_select_related = ("escalation__rule",)
    search_fields = ("target",)
    readonly_fields = [f.name for f in SuppressedNotification._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
