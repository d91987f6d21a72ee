from django.contrib import admin, messages

from .documents import document_candidate_link, document_candidate_reject
from .documents import unlinked as documents_unlinked
from .models import (
    ChangeOrder,
    Client,
    CrmOwner,
    Document,
    DocumentCandidate,
    FinancialLine,
    MatchCandidate,
    Milestone,
    Project,
    ResolutionSettings,
    SourceObject,
    Submittal,
    Vendor,
)
from .resolution import candidate_link, candidate_merge, candidate_reject, candidate_undo

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


class SettingsAdmin(admin.ModelAdmin):
    """The single row of thresholds: created on first visit, never deleted."""

    list_display = ("__str__", "auto_link_threshold", "review_threshold", "updated_at")

    def has_add_permission(self, request, obj=None):
        return not ResolutionSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        ResolutionSettings.current()
        return super().changelist_view(request, extra_context)


admin.site.register(ResolutionSettings, SettingsAdmin)


def _decide_each(
    modeladmin, request, queryset, decide, message: str, *, statuses=(MatchCandidate.Status.PENDING,)
) -> None:
    """Apply ``decide`` to each selected candidate in ``statuses``; report the count (``message`` names it
    ``{n}``) and each refusal."""
    done, failed = 0, []
    for candidate in queryset.filter(status__in=statuses):
        try:
            decide(candidate=candidate, actor=request.user)
        except ValueError as exc:
            failed.append(f"{candidate}: {exc}")
        else:
            done += 1
    modeladmin.message_user(request, message.format(n=done))
    for failure in failed:
        modeladmin.message_user(request, failure, level=messages.WARNING)


@admin.action(description="Link: the record is this entity", permissions=["change"])
def link_selected(modeladmin, request, queryset):
    _decide_each(modeladmin, request, queryset, candidate_link, "Linked {n} candidate(s).")


@admin.action(description="Reject: not a match (never proposed again)", permissions=["change"])
def reject_selected(modeladmin, request, queryset):
    _decide_each(modeladmin, request, queryset, candidate_reject, "Rejected {n} candidate(s).")


@admin.action(description="Merge: the record's entity is a duplicate of this one", permissions=["change"])
def merge_selected(modeladmin, request, queryset):
    _decide_each(modeladmin, request, queryset, candidate_merge, "Merged {n} candidate(s).")


@admin.action(description="Undo: take back the selected links and merges", permissions=["change"])
def undo_selected(modeladmin, request, queryset):
    _decide_each(
        modeladmin,
        request,
        queryset,
        candidate_undo,
        "Undid {n} decision(s); those pairs are pending review again.",
        statuses=(MatchCandidate.Status.LINKED, MatchCandidate.Status.MERGED),
    )


@admin.register(MatchCandidate)
class MatchCandidateAdmin(admin.ModelAdmin):
    """The review queue: fuzzy pairs between the two thresholds, best score first."""

    list_display = ("left", "left_entity", "right", "score_display", "status", "decided_by", "decided_at")
    list_select_related = [
        "source_object__connection",
        "source_object__client",
        "source_object__project",
        "client",
        "project",
        "decided_by",
    ]
    list_filter = ("status", ("client", admin.EmptyFieldListFilter))
    search_fields = ("source_object__name", "client__name", "project__name", "project__number")
    actions = [link_selected, reject_selected, merge_selected, undo_selected]
    readonly_fields = ("source_object", "client", "project", "score", "status", "decided_by", "decided_at")
    show_full_result_count = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="record", ordering="source_object__name")
    def left(self, obj: MatchCandidate) -> str:
        so = obj.source_object
        return f"{so.connection.slug}: {so.object_type} {so.name}"

    @admin.display(description="record is now")
    def left_entity(self, obj: MatchCandidate) -> str:
        so = obj.source_object
        return str(so.client or so.project or "—")

    @admin.display(description="candidate")
    def right(self, obj: MatchCandidate) -> str:
        return str(obj.right)

    @admin.display(description="score", ordering="score")
    def score_display(self, obj: MatchCandidate) -> str:
        return f"{obj.score:.1f}"


class DocumentLinkFilter(admin.SimpleListFilter):
    """Unlinked documents (nothing they name was found) and those waiting in the review queue."""

    title = "linked"
    parameter_name = "linked"

    def lookups(self, request, model_admin):
        return [("no", "Unlinked"), ("review", "In review"), ("yes", "Linked")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return documents_unlinked(queryset)
        if self.value() == "review":
            return queryset.filter(candidates__status=DocumentCandidate.Status.PENDING).distinct()
        if self.value() == "yes":
            return queryset.exclude(pk__in=documents_unlinked(queryset).values("pk"))
        return queryset


@admin.register(Document)
class DocumentAdmin(SourcedAdmin):
    """Documents AI tools processed: what they said, with what confidence, and what they are linked to."""

    list_display = (
        "external_id",
        "label",
        "confidence",
        "amount",
        "vendor_name",
        "client_name",
        "project",
        "change_order",
        "link_method",
        "source",
    )
    list_select_related = ["source", "project", "change_order"]
    list_filter = (DocumentLinkFilter, "label", "link_method", "source")
    search_fields = ("external_id", "vendor_name", "client_name", "project_ref", "invoice_ref")
    raw_id_fields = ("project", "client", "vendor", "change_order", "invoice")
    readonly_fields = (  # type: ignore[assignment]
        *SOURCE_FIELDS,
        "tool",
        "model_id",
        "model_version",
        "label",
        "confidence",
        "amount",
        "amount_confidence",
        "currency",
        "vendor_name",
        "client_name",
        "project_ref",
        "change_order_ref",
        "invoice_ref",
        "document_date",
        "analyzed_at",
        "extracted",
        "link_method",
    )


@admin.action(description="Link: the document names this client or vendor", permissions=["change"])
def link_documents(modeladmin, request, queryset):
    _decide_documents(modeladmin, request, queryset, document_candidate_link, "Linked")


@admin.action(description="Reject: not a match (never proposed again)", permissions=["change"])
def reject_documents(modeladmin, request, queryset):
    _decide_documents(modeladmin, request, queryset, document_candidate_reject, "Rejected")


def _decide_documents(modeladmin, request, queryset, decide, verb: str) -> None:
    done, failed = 0, []
    for candidate in queryset.filter(status=DocumentCandidate.Status.PENDING):
        try:
            decide(candidate=candidate, actor=request.user)
        except ValueError as exc:
            failed.append(f"{candidate}: {exc}")
        else:
            done += 1
    modeladmin.message_user(request, f"{verb} {done} candidate(s).")
    for message in failed:
        modeladmin.message_user(request, message, level=messages.WARNING)


@admin.register(DocumentCandidate)
class DocumentCandidateAdmin(admin.ModelAdmin):
    """The documents' review queue: names scored between the two thresholds, best first."""

    list_display = ("document", "client", "vendor", "score", "status", "decided_by", "decided_at")
    list_select_related = ["document", "client", "vendor", "decided_by"]
    list_filter = ("status",)
    search_fields = ("document__external_id", "document__client_name", "document__vendor_name")
    actions = [link_documents, reject_documents]
    readonly_fields = ("document", "client", "vendor", "score", "status", "decided_by", "decided_at")
    show_full_result_count = False

    def has_add_permission(self, request, obj=None):
        return False
