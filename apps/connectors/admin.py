from __future__ import annotations

import base64
import datetime as dt
import json
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.audit.services import audit_record

from .csv_import import csv_import, csv_preview
from .kinds import ConfigurationError
from .kinds.csv import CsvMapping, entity_fields, read_csv
from .kinds.rest.options import ENTITIES
from .kinds.rest.options import parse_options as parse_rest_options
from .models import Connection, QuarantinedRecord, SchemaDrift, StreamState, SyncRun, WebhookDelivery
from .operations import connection_resync_from, connection_test
from .services import _schedule_save


class ConnectionForm(forms.ModelForm):
    """Secrets are write-only: blank keeps the stored value, and the stored value is never rendered."""

    new_credentials = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text='JSON, e.g. {"access_token": "..."}. Leave blank to keep the stored credentials.',
    )
    new_webhook_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Replaces the current secret; the previous one stays accepted (rotation). Blank keeps it.",
    )

    class Meta:
        model = Connection
        fields = ("slug", "kind", "base_url", "schedule", "options", "enabled")
        # A base URL typed without a scheme is https (Django 6's default; said explicitly until then).
        field_classes = {"base_url": partial(forms.URLField, assume_scheme="https")}

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("kind") == Connection.Kind.REST:
            try:
                parse_rest_options(cleaned.get("options"))
            except ConfigurationError as exc:
                self.add_error("options", str(exc))
        return cleaned

    def clean_new_credentials(self) -> dict[str, Any] | None:
        raw = self.cleaned_data.get("new_credentials") or ""
        if not raw.strip():
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno})") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("credentials must be a JSON object")
        return value


class ResyncFromForm(forms.Form):
    since = forms.DateTimeField(
        help_text="Streams re-read records changed since then; nothing is deleted (site time)."
    )

    def clean_since(self) -> dt.datetime:
        since: dt.datetime = self.cleaned_data["since"]
        if since > timezone.now():
            raise forms.ValidationError("the date is in the future")
        return since


class CsvUploadForm(forms.Form):
    """Step one uploads the file (kept in the session for the next steps); each submit previews or imports."""

    file = forms.FileField(required=False, help_text="UTF-8 CSV with a header row. Kept until you import.")
    entity = forms.ChoiceField(choices=[(name, name) for name in sorted(ENTITIES)])
    id_column = forms.CharField(help_text="The column holding each record's id in the source.")
    updated_column = forms.CharField(
        required=False, help_text="Optional: the column with each record's last-modified time."
    )
    columns = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 60}),
        help_text='JSON {"CSV column": "entity field"}; blank maps columns named like a field to it.',
    )

    def clean_columns(self) -> dict[str, str] | None:
        raw = (self.cleaned_data.get("columns") or "").strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg}") from exc
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise forms.ValidationError("expected a JSON object of column names to field names")
        return value


class StreamInline(admin.TabularInline):
    model = StreamState
    extra = 0
    can_delete = False
    fields = ("stream", "last_success_at", "last_reconciled_at", "record_count", "cursor")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = ("slug", "kind", "base_url", "enabled", "schedule", "last_run")
    readonly_fields = ("csv_upload",)
    list_filter = ("kind", "enabled")
    search_fields = ("slug", "base_url")
    inlines = [StreamInline]
    actions = ["resync_now", "resync_from_date", "rebuild", "reconcile_now", "test_connection"]
    fieldsets = [
        (None, {"fields": ("slug", "kind", "base_url", "schedule", "options", "enabled", "csv_upload")}),
        ("Secrets (write-only, stored encrypted)", {"fields": ("new_credentials", "new_webhook_secret")}),
    ]

    def get_urls(self) -> list[Any]:
        custom = [
            path(
                "<path:object_id>/csv-upload/",
                self.admin_site.admin_view(self.csv_upload_view),
                name="connectors_connection_csv_upload",
            )
        ]
        return custom + super().get_urls()

    def csv_upload_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Upload, map, preview and import a CSV into one entity (csv connections)."""
        connection = self.get_object(request, object_id)
        if connection is None or not self.has_change_permission(request, connection):
            raise PermissionDenied
        if connection.kind != Connection.Kind.CSV:
            self.message_user(request, "CSV upload is for csv connections.", messages.ERROR)
            return redirect("admin:connectors_connection_change", connection.pk)
        session_key = f"csv_upload:{connection.pk}"
        form = CsvUploadForm(request.POST or None, request.FILES or None)
        preview = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            if upload is not None:
                data = upload.read()
                request.session[session_key] = base64.b64encode(data).decode()
            else:
                data = base64.b64decode(request.session.get(session_key, ""))
            if not data:
                form.add_error("file", "upload a file first")
            else:
                try:
                    headers, _rows = read_csv(data)
                    entity = form.cleaned_data["entity"]
                    columns = form.cleaned_data["columns"] or {
                        h: h
                        for h in headers
                        if h in entity_fields(entity) and h != form.cleaned_data["id_column"]
                    }
                    mapping = CsvMapping(
                        entity=entity,
                        id_column=form.cleaned_data["id_column"].strip(),
                        updated_column=form.cleaned_data["updated_column"].strip(),
                        columns=columns,
                    )
                    if "import" in request.POST:
                        run = csv_import(
                            connection=connection, data=data, mapping=mapping, actor=request.user
                        )
                        request.session.pop(session_key, None)
                        c = run.counts
                        self.message_user(
                            request,
                            f"Imported {c['seen']} rows: {c['inserted']} new, {c['updated']} updated, "
                            f"{c['unchanged']} unchanged, {c['quarantined']} quarantined.",
                            messages.SUCCESS,
                        )
                        return redirect("admin:connectors_connection_change", connection.pk)
                    preview = csv_preview(connection=connection, data=data, mapping=mapping)
                except ConfigurationError as exc:
                    form.add_error(None, str(exc))
        context = {
            **self.admin_site.each_context(request),
            "title": f"CSV upload into {connection.slug}",
            "form": form,
            "preview": preview,
            "connection": connection,
            "has_file": bool(request.session.get(session_key)),
            "entity_fields": {name: entity_fields(name) for name in sorted(ENTITIES)},
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/connectors/csv_upload.html", context)

    @admin.display(description="CSV")
    def csv_upload(self, obj: Connection) -> str:
        if obj.pk is None or obj.kind != Connection.Kind.CSV:
            return "-"
        url = reverse("admin:connectors_connection_csv_upload", args=[obj.pk])
        return format_html('<a href="{}">Upload, preview and import a CSV</a>', url)

    @admin.display(description="Last sync")
    def last_run(self, obj: Connection) -> str:
        run = obj.runs.order_by("-started_at").first()
        return f"{run.stream} {run.status} {run.started_at:%Y-%m-%d %H:%M}" if run else "never"

    def save_model(self, request: HttpRequest, obj: Connection, form: ConnectionForm, change: bool) -> None:
        secrets_changed = []
        if form.cleaned_data.get("new_credentials") is not None:
            obj.credentials = form.cleaned_data["new_credentials"]
            secrets_changed.append("credentials")
        if new_secret := form.cleaned_data.get("new_webhook_secret"):
            obj.webhook_secrets = [new_secret, *obj.webhook_secrets[:1]]
            secrets_changed.append("webhook_secret")
        super().save_model(request, obj, form, change)
        _schedule_save(obj)
        audit_record(
            action="connection.changed" if change else "connection.created",
            actor=request.user,
            object_type="connection",
            object_id=obj.slug,
            data={"fields": sorted(form.changed_data), "secrets_replaced": secrets_changed},
        )

    @admin.action(description="Resync now (incremental)", permissions=["change"])
    def resync_now(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        from .tasks import sync_connection_task

        for connection in queryset:
            sync_connection_task.delay(connection.pk)
            audit_record(
                action="connection.resync_requested",
                actor=request.user,
                object_type="connection",
                object_id=connection.slug,
            )
        self.message_user(request, f"Sync queued for {queryset.count()} connection(s).", messages.SUCCESS)

    @admin.action(description="Resync from date (keep data)", permissions=["change"])
    def resync_from_date(
        self, request: HttpRequest, queryset: QuerySet[Connection]
    ) -> TemplateResponse | None:
        form = ResyncFromForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            for connection in queryset:
                connection_resync_from(
                    connection=connection, since=form.cleaned_data["since"], actor=request.user
                )
            self.message_user(
                request,
                f"Cursors moved back to {form.cleaned_data['since']:%Y-%m-%d %H:%M} and sync queued for "
                f"{queryset.count()} connection(s); no data was deleted.",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Resync from date",
            "form": form,
            "connections": queryset,
            "action": "resync_from_date",
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/connectors/resync_from.html", context)

    @admin.action(
        description="Rebuild (full re-read; tombstone the unseen only if it succeeds)", permissions=["change"]
    )
    def rebuild(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        from .tasks import rebuild_connection_task

        for connection in queryset:
            actor = f"user:{request.user.get_username()}"
            transaction.on_commit(partial(rebuild_connection_task.delay, connection.pk, actor))
            audit_record(
                action="connection.rebuild_requested",
                actor=request.user,
                object_type="connection",
                object_id=connection.slug,
            )
        self.message_user(request, f"Rebuild queued for {queryset.count()} connection(s).", messages.SUCCESS)

    @admin.action(
        description="Reconcile now (id sweep: deleted upstream → tombstones)", permissions=["change"]
    )
    def reconcile_now(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        from .tasks import reconcile_connection_task

        for connection in queryset:
            transaction.on_commit(partial(reconcile_connection_task.delay, connection.pk))
        self.message_user(request, f"Id sweep queued for {queryset.count()} connection(s).", messages.SUCCESS)

    @admin.action(description="Test connection (first page of each stream)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset:
            probes = connection_test(connection=connection, actor=request.user)
            failed = [p for p in probes if p.error]
            self.message_user(
                request,
                f"{connection.slug}: " + "; ".join(str(p) for p in probes),
                messages.ERROR if failed else messages.SUCCESS,
            )


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    """Runs with their progress: counts and the heartbeat are committed with every page, so the list is
    live; it reloads itself while a run is under way (``change_list.html`` of this model)."""

    list_display = ("connection", "stream", "status", "full", "started_at", "progress", "last_heartbeat")
    list_filter = ("status", "connection", "stream")
    list_select_related = ("connection",)
    readonly_fields = ("counts",)

    @admin.display(description="progress")
    def progress(self, run: SyncRun) -> str:
        counts = run.counts or {}
        parts = [f"{counts.get(k, 0):,} {k}" for k in ("pages", "seen", "inserted", "updated", "quarantined")]
        waited = counts.get("rate_limited_seconds")
        if waited:
            parts.append(f"{waited:.0f} s rate-limited")
        return " · ".join(parts)

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def last_heartbeat(self, run: SyncRun) -> str:
        if run.status != SyncRun.Status.RUNNING:
            return f"finished {run.finished_at:%H:%M:%S}" if run.finished_at else "—"
        return f"{(timezone.now() - run.heartbeat_at).total_seconds():.0f} s ago"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        running = SyncRun.objects.filter(status=SyncRun.Status.RUNNING).exists()
        return super().changelist_view(
            request, {**(extra_context or {}), "refresh_seconds": 5 if running else 0}
        )


@admin.register(QuarantinedRecord)
class QuarantinedRecordAdmin(ReadOnlyAdmin):
    list_display = ("connection", "stream", "external_id", "reason", "created_at")
    list_filter = ("connection", "stream")
    list_select_related = ("connection",)


@admin.register(SchemaDrift)
class SchemaDriftAdmin(ReadOnlyAdmin):
    list_display = (
        "connection",
        "stream",
        "new_fields",
        "missing_fields",
        "example_external_id",
        "detected_at",
    )
    list_filter = ("connection", "stream")
    list_select_related = ("connection",)


class IgnoredEventsFilter(admin.SimpleListFilter):
    """Deliveries whose events changed nothing here (an entity or operation not synced, another realm)."""

    title = "ignored events"
    parameter_name = "ignored"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Some ignored"), ("no", "None ignored")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(summary__ignored__gt=0)
        if self.value() == "no":
            return queryset.exclude(summary__ignored__gt=0)
        return queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "connection",
        "event_id",
        "status",
        "signature_valid",
        "received_at",
        "attempts",
        "ignored_events",
        "error",
    )
    list_filter = ("status", "signature_valid", IgnoredEventsFilter, "connection")
    list_select_related = ("connection",)
    exclude = ("body",)

    @admin.display(description="ignored events")
    def ignored_events(self, obj: WebhookDelivery) -> str:
        """Events the delivery held that were deliberately not applied (other objects, associations,
        unreadable ones), by type: a batch is never refused for them."""
        types = (obj.summary or {}).get("ignored_types") or {}
        return ", ".join(f"{name}: {count}" for name, count in sorted(types.items())) or "-"
