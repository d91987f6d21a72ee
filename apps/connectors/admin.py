from __future__ import annotations

import base64
import datetime as dt
import json
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from apps.accounts.roles import ADMINISTRATORS, in_role
from apps.audit.services import audit_record

from .csv_import import csv_import, csv_preview
from .kinds import KINDS, ConfigurationError, get_kind
from .kinds.csv import CsvMapping, entity_fields, read_csv
from .kinds.rest.options import ENTITIES
from .kinds.rest.options import parse_options as parse_rest_options
from .mappings import connection_field_mappings
from .models import Connection, QuarantinedRecord, SchemaDrift, StreamState, SyncRun, WebhookDelivery
from .operations import connection_resync_from, connection_test
from .services import _schedule_save

FIELD_MAP_PREFIX = "field_map__"
FIELD_NAME_MAX = 200


def field_map_fields(kind: str | None) -> list[tuple[str, str, Any]]:
    """(form field name, kind, FieldMapping) of one kind's mappings, or of every kind's when None."""
    kinds = [KINDS[kind]] if kind in KINDS else ([] if kind else list(KINDS.values()))
    return [
        (f"{FIELD_MAP_PREFIX}{cls.kind}__{mapping.name}", cls.kind, mapping)
        for cls in kinds
        for mapping in cls.field_mappings
    ]


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.kind if self.instance.pk else None
        mapped = ((self.instance.options or {}).get("field_map") or {}) if current else {}
        for key, kind, mapping in field_map_fields(current):
            self.fields[key] = forms.CharField(
                required=False,
                max_length=FIELD_NAME_MAX,
                label=mapping.name if current else f"{kind}: {mapping.name}",
                initial=mapped.get(mapping.name, ""),
                widget=forms.TextInput(attrs={"placeholder": mapping.default, "size": 40}),
                help_text=f"{mapping.help} Blank reads the default, {mapping.default}.",
            )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        self._clean_field_map(cleaned)
        if cleaned.get("kind") == "rest":
            try:
                parse_rest_options(cleaned.get("options"))
            except ConfigurationError as exc:
                self.add_error("options", str(exc))
        return cleaned

    def _clean_field_map(self, cleaned: dict[str, Any]) -> None:
        """The mapping fields of the chosen kind become ``options.field_map`` (blank: the kind's default)."""
        kind = cleaned.get("kind")
        fields = [(key, mapping) for key, k, mapping in field_map_fields(None) if k == kind]
        if not fields or not isinstance(cleaned.get("options"), dict | type(None)):
            return
        options = dict(cleaned.get("options") or {})
        chosen = {}
        for key, mapping in fields:
            value = str(cleaned.get(key) or "").strip()
            if any(ord(ch) < 32 for ch in value):
                self.add_error(key, "a field name cannot hold control characters or line breaks")
            elif value and value != mapping.default:
                chosen[mapping.name] = value
        others = {
            name: value
            for name, value in (options.get("field_map") or {}).items()
            if name not in {mapping.name for _, mapping in fields}
        }
        if chosen or others:
            options["field_map"] = {**others, **chosen}
        else:
            options.pop("field_map", None)
        cleaned["options"] = options

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
    fields = ("stream", "last_success_at", "last_reconciled_at", "record_count", "position")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="cursor")
    def position(self, state: StreamState) -> str:
        """Where the next incremental read starts, in TIME_ZONE like every other time on the page (the
        stored cursor keeps the vendor's UTC)."""
        cursor = state.cursor or {}
        try:
            moment = dt.datetime.fromisoformat(str(cursor["updated_at"]))
        except (KeyError, ValueError):
            return json.dumps(cursor) if cursor else "—"
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, dt.UTC)
        after = f" (after id {cursor['id']})" if cursor.get("id") else ""
        return f"updated since {timezone.localtime(moment):%Y-%m-%d %H:%M:%S %Z}{after}"


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = ("slug", "kind", "base_url", "enabled", "schedule", "last_run")
    readonly_fields = ("csv_upload",)
    list_filter = ("kind", "enabled")
    search_fields = ("slug", "base_url")
    inlines = [StreamInline]
    actions = [
        "resync_now",
        "resync_from_date",
        "rebuild",
        "reconcile_now",
        "rebuild_confirming_deletes",
        "reconcile_confirming_deletes",
        "catch_up",
        "test_connection",
    ]
    fieldsets = [
        (None, {"fields": ("slug", "kind", "base_url", "schedule", "options", "enabled", "csv_upload")}),
        ("Secrets (write-only, stored encrypted)", {"fields": ("new_credentials", "new_webhook_secret")}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Connection | None = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        names: list[Any] = [key for key, _, _ in field_map_fields(obj.kind if obj else None)]
        if names:
            fieldsets.insert(
                1,
                (
                    "Field mappings (tenant-specific vendor field names; blank = the default shown)",
                    {"fields": names},
                ),
            )
        return fieldsets

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        # The mapping fields are the form's own (added per kind in __init__), not the model's.
        fields = flatten_fieldsets(self.get_fieldsets(request, obj))
        kwargs["fields"] = [name for name in fields if not name.startswith(FIELD_MAP_PREFIX)]
        return super().get_form(request, obj, change, **kwargs)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        custom = [
            path(
                "<path:object_id>/csv-upload/",
                view(self.csv_upload_view),
                name="connectors_connection_csv_upload",
            ),
            path("<path:object_id>/resync/", view(self.resync_view), name="connectors_connection_resync"),
            path(
                "<path:object_id>/sync-progress/",
                view(self.sync_progress_view),
                name="connectors_connection_sync_progress",
            ),
        ]
        return custom + super().get_urls()

    # --- Resync now and its progress ----------------------------------------------------------------

    def has_resync_permission(self, request: HttpRequest, obj: Connection | None = None) -> bool:
        """SPEC "Who uses it": "Resync now" is the Administrators' (operations managers edit mappings)."""
        return in_role(request.user, ADMINISTRATORS)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = {**(extra_context or {}), "can_resync": self.has_resync_permission(request)}
        return super().change_view(request, object_id, form_url, extra)

    def resync_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: queue an incremental sync of this connection, then show its progress."""
        from apps.api.services import ConnectionDisabled, connection_resync_request

        connection = self.get_object(request, object_id)
        if connection is None:
            raise Http404("no such connection")
        if not self.has_resync_permission(request, connection):
            raise PermissionDenied
        if request.method != "POST":
            return redirect("admin:connectors_connection_change", connection.pk)
        requested = timezone.now()
        # The runs of this sync are the ones after the newest run now: ids, not the database's clock
        # (a run's started_at is its transaction's start, which another server's clock may not match).
        after = SyncRun.objects.aggregate(newest=Max("pk"))["newest"] or 0
        try:
            connection_resync_request(connection=connection, actor=request.user)
        except ConnectionDisabled as exc:
            self.message_user(request, f"Not synced: {exc}. Enable it first.", messages.ERROR)
            return redirect("admin:connectors_connection_change", connection.pk)
        self.message_user(request, f"Sync of {connection.slug} queued.", messages.SUCCESS)
        url = reverse("admin:connectors_connection_sync_progress", args=[connection.pk])
        return redirect(f"{url}?{urlencode({'after': after, 'since': requested.isoformat()})}")

    def sync_progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Each stream's run since the request (or running now), live: the page reloads every few
        seconds until every stream has finished (SyncRun counts are committed with every page)."""
        connection = self.get_object(request, object_id)
        if connection is None:
            raise Http404("no such connection")
        if not self.has_view_permission(request, connection):
            raise PermissionDenied
        # after: the newest run id when the sync was requested (no parameter: the latest run of each
        # stream); since: when it was requested.
        try:
            after = int(request.GET.get("after", ""))
        except ValueError:
            after = None
        try:
            since: dt.datetime | None = dt.datetime.fromisoformat(request.GET.get("since", ""))
        except ValueError:
            since = None
        if since is not None and timezone.is_naive(since):
            since = timezone.make_aware(since)
        selected = connection.runs.all()
        if after is not None:
            selected = selected.filter(Q(pk__gt=after) | Q(status=SyncRun.Status.RUNNING))
        runs = list(selected.order_by("pk"))
        latest: dict[str, SyncRun] = {}
        for run in runs:
            latest[run.stream] = run  # the newest run of each stream
        try:
            known = [stream.name for stream in get_kind(connection).streams]
        except ConfigurationError:  # options that no longer parse: the streams it has state for
            known = list(connection.streams.values_list("stream", flat=True))
        rows = [(stream, latest.get(stream)) for stream in [*known, *sorted(set(latest) - set(known))]]
        waiting = [stream for stream, run in rows if run is None]
        running = [stream for stream, run in rows if run and run.status == SyncRun.Status.RUNNING]
        # Stop reloading once every stream ran, or when a worker has not picked the sync up for
        # 10 minutes (the page then says so instead of spinning).
        stalled = not runs and since is not None and timezone.now() - since > dt.timedelta(minutes=10)
        # Every stream ran, and the worker links what they stored and marks it for evaluation
        # (``changes_publish``); a publish not done within PUBLISH_WAIT will not come from that worker.
        ended = [run for _, run in rows if run and run.status != SyncRun.Status.RUNNING]
        unpublished = [run for run in ended if run.published_at is None]
        last_end = max((run.finished_at or run.started_at for run in unpublished), default=None)
        linking = bool(not running and not waiting and last_end and timezone.now() - last_end < PUBLISH_WAIT)
        done = not running and not waiting and not linking
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": connection,
            "connection": connection,
            "title": f"Sync of {connection.slug}",
            "since": since,
            "rows": [(stream, run, _run_progress(run) if run else "") for stream, run in rows],
            "done": done,
            "linking": linking,
            "unpublished": done and bool(unpublished),
            "stalled": stalled,
            "refresh_seconds": 0 if done or stalled else 2,
            "can_resync": self.has_resync_permission(request, connection),
        }
        return TemplateResponse(request, "admin/connectors/connection/sync_progress.html", context)

    def csv_upload_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Upload, map, preview and import a CSV into one entity (csv connections)."""
        connection = self.get_object(request, object_id)
        if connection is None or not self.has_change_permission(request, connection):
            raise PermissionDenied
        if connection.kind != "csv":
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
        if obj.pk is None or obj.kind != "csv":
            return "-"
        url = reverse("admin:connectors_connection_csv_upload", args=[obj.pk])
        return format_html('<a href="{}">Upload, preview and import a CSV</a>', url)

    @admin.display(description="Last sync")
    def last_run(self, obj: Connection) -> str:
        run = obj.runs.order_by("-started_at").first()
        return (
            f"{run.stream} {run.status} {timezone.localtime(run.started_at):%Y-%m-%d %H:%M}"
            if run
            else "never"
        )

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

    @admin.action(description="Resync now (incremental)", permissions=["resync"])
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
                f"Cursors moved back to {timezone.localtime(form.cleaned_data['since']):%Y-%m-%d %H:%M} and "
                f"sync queued for "
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

    def _confirm_mass_delete(self, request: HttpRequest, queryset: QuerySet[Connection], task: Any) -> None:
        """Queue a sweep or Rebuild that may tombstone more than the mass-delete guard allows."""
        for connection in queryset:
            actor = f"user:{request.user.get_username()}"
            transaction.on_commit(partial(task.delay, connection.pk, actor, True))
            audit_record(
                action="connection.mass_delete_confirmed",
                actor=request.user,
                object_type="connection",
                object_id=connection.slug,
                data={"task": task.name},
            )
        self.message_user(
            request,
            f"Queued for {queryset.count()} connection(s), with the mass-delete guard lifted once.",
            messages.WARNING,
        )

    @admin.action(
        description="Rebuild, confirming mass deletes (lifts the guard once; administrators)",
        permissions=["confirm_deletes"],
    )
    def rebuild_confirming_deletes(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        from .tasks import rebuild_connection_task

        self._confirm_mass_delete(request, queryset, rebuild_connection_task)

    @admin.action(
        description="Reconcile, confirming mass deletes (lifts the guard once; administrators)",
        permissions=["confirm_deletes"],
    )
    def reconcile_confirming_deletes(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        from .tasks import reconcile_connection_task

        self._confirm_mass_delete(request, queryset, reconcile_connection_task)

    def has_confirm_deletes_permission(self, request: HttpRequest) -> bool:
        # Tombstoning most of a stream is the administrators' call, like credentials and "Resync now".
        return bool(request.user.is_superuser or request.user.groups.filter(name=ADMINISTRATORS).exists())

    @admin.action(
        description="Catch up after webhook downtime (re-read the vendor's change feed, last 30 days max)",
        permissions=["change"],
    )
    def catch_up(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        from .tasks import catch_up_connection_task

        actor = f"user:{request.user.get_username()}"
        now = timezone.now()
        queued, skipped = 0, []
        for connection in queryset:
            kind = get_kind(connection)
            if not kind.catches_up:
                skipped.append(connection.slug)
                continue
            since = kind.catch_up_start(now)
            task = partial(catch_up_connection_task.delay, connection.pk, since.isoformat(), actor)
            transaction.on_commit(task)
            queued += 1
        self.message_user(request, f"Catch-up queued for {queued} connection(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"No change feed to catch up from: {', '.join(skipped)}", messages.WARNING
            )

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
            if failed:
                continue
            # Each field mapping against a sample of real records: the vendor field read and what it holds.
            mappings = connection_field_mappings(connection=connection)
            if mappings:
                self.message_user(
                    request,
                    f"{connection.slug} field mappings: " + "; ".join(str(m) for m in mappings),
                    messages.WARNING if any(m.reason for m in mappings) else messages.SUCCESS,
                )


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# How long the progress page waits, after the last stream ended, for the sync to link and mark its changes.
PUBLISH_WAIT = dt.timedelta(minutes=2)


def _run_progress(run: SyncRun) -> str:
    counts = run.counts or {}
    pages = counts.get("pages", 0)
    parts = [f"{pages:,} {'page' if pages == 1 else 'pages'}"]
    parts += [f"{counts.get(k, 0):,} {k}" for k in ("seen", "inserted", "updated", "quarantined")]
    waited = counts.get("rate_limited_seconds")
    if waited:
        parts.append(f"{waited:.0f} s rate-limited")
    return " · ".join(parts)


class LinkedFilter(admin.SimpleListFilter):
    """Runs whose changes are linked and marked for evaluation, or finished and not yet (changes_publish)."""

    title = "linked"
    parameter_name = "linked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "Finished, not yet")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(published_at__isnull=False)
        if self.value() == "no":
            return queryset & SyncRun.objects.unpublished()
        return queryset


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    """Runs with their progress: counts and the heartbeat are committed with every page, so the list is
    live; it reloads itself while a run is under way (``change_list.html`` of this model)."""

    list_display = (
        "connection", "stream", "status", "full", "started_at", "progress", "last_heartbeat", "published"
    )  # fmt: skip
    list_filter = ("status", LinkedFilter, "connection", "stream")
    list_select_related = ("connection",)
    readonly_fields = ("counts",)

    @admin.display(description="progress")
    def progress(self, run: SyncRun) -> str:
        return _run_progress(run)

    @admin.display(description="linked", boolean=True, ordering="published_at")
    def published(self, run: SyncRun) -> bool | None:
        """Whether what the run stored is linked and marked for evaluation (``changes_publish``): at the end
        of its sync, else by the connection's next; unknown while it runs."""
        if run.status == SyncRun.Status.RUNNING and run.published_at is None:
            return None
        return run.published_at is not None

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def last_heartbeat(self, run: SyncRun) -> str:
        if run.status != SyncRun.Status.RUNNING:
            return f"finished {timezone.localtime(run.finished_at):%H:%M:%S}" if run.finished_at else "—"
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
