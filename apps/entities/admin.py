from django.contrib import admin

from .models import (
    ChangeOrder,
    Client,
    CrmOwner,
    FinancialLine,
    Milestone,
    Project,
    SourceObject,
    Submittal,
    Vendor,
)

SOURCE_FIELDS = ("source", "external_id", "source_updated_at", "content_hash", "synced_at", "deleted_at")


class SourcedAdmin(admin.ModelAdmin):
    """Synced data is read-only here: upstream systems own it."""

    readonly_fields = SOURCE_FIELDS
    list_select_related = ["source"]
    show_full_result_count = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Client)
class ClientAdmin(SourcedAdmin):
    list_display = ("name", "domain", "owner", "renewal_date", "source", "external_id")
    list_select_related = ["source", "owner"]
    search_fields = ("name", "domain", "external_id")
    list_filter = ("source",)


@admin.register(Project)
class ProjectAdmin(SourcedAdmin):
    list_display = ("number", "name", "client", "contract_value", "schedule_status", "source")
    list_select_related = ["source", "client"]
    search_fields = ("number", "name", "client__name")
    list_filter = ("schedule_status",)
    raw_id_fields = ("client",)


@admin.register(ChangeOrder)
class ChangeOrderAdmin(SourcedAdmin):
    list_display = ("number", "title", "project", "status", "amount", "created_upstream_at")
    list_select_related = ["source", "project"]
    search_fields = ("number", "title", "project__number")
    list_filter = ("status",)
    raw_id_fields = ("project",)


@admin.register(Milestone)
class MilestoneAdmin(SourcedAdmin):
    list_display = ("name", "project", "due_date", "completed_date")
    list_select_related = ["source", "project"]
    raw_id_fields = ("project",)


@admin.register(Submittal)
class SubmittalAdmin(SourcedAdmin):
    list_display = ("number", "title", "project", "vendor", "revision", "due_date", "returned_date")
    list_select_related = ["source", "project", "vendor"]
    raw_id_fields = ("project", "vendor")


@admin.register(FinancialLine)
class FinancialLineAdmin(SourcedAdmin):
    list_display = ("external_id", "kind", "project", "amount", "balance", "due_date")
    list_select_related = ["source", "project"]
    list_filter = ("kind",)
    raw_id_fields = ("project",)


@admin.register(Vendor)
class VendorAdmin(SourcedAdmin):
    list_display = ("name", "email", "source")
    search_fields = ("name",)


@admin.register(CrmOwner)
class CrmOwnerAdmin(SourcedAdmin):
    list_display = ("name", "email", "user", "source")
    list_select_related = ["source", "user"]


@admin.register(SourceObject)
class SourceObjectAdmin(admin.ModelAdmin):
    """The crosswalk: how each other system's record is linked to a canonical client or project."""

    list_display = ("object_type", "external_id", "name", "match_key", "client", "project", "match_method")
    list_select_related = ["client", "project", "connection"]
    list_filter = ("object_type", "match_method")
    search_fields = ("name", "match_key", "external_id")
    raw_id_fields = ("client", "project")
    show_full_result_count = False
