from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .models import Delivery, Escalation, EscalationEvent


class EventInline(admin.TabularInline):
    model = EscalationEvent
    extra = 0
    can_delete = False
    readonly_fields = ("created_at", "kind", "actor", "via", "note")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    readonly_fields = (
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
    )
    list_filter = ("status", "route", "severity", "rule")
    list_select_related = ("rule", "client")
    search_fields = ("subject_label", "client__name")
    readonly_fields = [f.name for f in Escalation._meta.fields]
    inlines = [EventInline, DeliveryInline]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Escalation]:
        return Escalation.objects.visible_to(request.user).select_related("rule", "client")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The outbox; dead rows are the dead-letter list, with replay."""

    list_display = (
        "id",
        "escalation",
        "action",
        "target",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
    )
    list_filter = ("state", "action")
    list_select_related = ("escalation",)
    readonly_fields = [f.name for f in Delivery._meta.fields]
    actions = ["replay"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    @admin.action(description="Replay selected failed or dead deliveries", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        from .tasks import deliver

        ids = list(
            queryset.filter(state__in=[Delivery.State.DEAD, Delivery.State.FAILED]).values_list(
                "pk", flat=True
            )
        )
        Delivery.objects.filter(pk__in=ids).update(
            state=Delivery.State.PENDING, next_attempt_at=timezone.now()
        )
        for pk in ids:
            deliver.delay(pk)
        self.message_user(request, f"{len(ids)} deliveries queued again.", messages.SUCCESS)
