from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from .models import Finding, VolumeBaseline
from .services import finding_accept, summary

# Where a finding's subject is shown in admin.
SUBJECT_ADMIN = {
    "client": "entities_client",
    "project": "entities_project",
    "change_order": "entities_changeorder",
    "milestone": "entities_milestone",
    "submittal": "entities_submittal",
    "financial_line": "entities_financialline",
    "source_object": "entities_sourceobject",
    "quarantined_record": "connectors_quarantinedrecord",
}


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return [("yes", "open"), ("no", "resolved")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.action(description="Accept as it is (resolve; a volume drop's count becomes the baseline)")
def accept_selected(modeladmin, request, queryset):
    findings = list(queryset.filter(resolved_at__isnull=True))
    for finding in findings:
        finding_accept(finding=finding, actor=request.user)
    modeladmin.message_user(request, f"Accepted {len(findings)} finding(s).")


@admin.register(Finding)
class FindingAdmin(admin.ModelAdmin):
    """The data-quality page: findings with filters, and a summary of what is open."""

    list_display = (
        "severity",
        "kind",
        "check_name",
        "subject",
        "connection",
        "detail",
        "first_seen",
        "last_seen",
        "resolved_at",
    )
    list_filter = (OpenFilter, "kind", "severity", "check_name", "connection")
    list_select_related = ["connection"]
    search_fields = ("key",)
    actions = [accept_selected]
    readonly_fields = [f.name for f in Finding._meta.fields]
    show_full_result_count = False
    change_list_template = "admin/quality/finding/change_list.html"

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="subject")
    def subject(self, obj: Finding) -> str:
        if obj.subject_id is None:
            return obj.stream
        label = f"{obj.subject_type} {obj.subject_id}"
        if obj.subject_type not in SUBJECT_ADMIN:
            return label
        try:
            url = reverse(f"admin:{SUBJECT_ADMIN[obj.subject_type]}_change", args=[obj.subject_id])
        except NoReverseMatch:
            return label
        return format_html('<a href="{}">{}</a>', url, label)

    def get_urls(self):
        view = self.admin_site.admin_view(self.summary_view)
        return [path("summary/", view, name="quality_finding_summary"), *super().get_urls()]

    def summary_view(self, request):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Data quality summary",
            "summary": summary(),
            "now": timezone.now(),
        }
        return TemplateResponse(request, "admin/quality/finding/summary.html", context)


@admin.register(VolumeBaseline)
class VolumeBaselineAdmin(admin.ModelAdmin):
    """The accepted record counts volume drops are measured against."""

    list_display = ("connection", "entity", "count", "measured_at")
    list_select_related = ["connection"]
    list_filter = ("connection",)
