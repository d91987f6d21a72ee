"""What the API shows. Read-only representations; writes go through the action serializers to services.

Every nested object is loaded by the viewsets' ``select_related`` / ``prefetch_related``: a serializer
here must never trigger a query of its own (the list tests cap the count).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from apps.connectors.models import Connection, StreamState
from apps.entities.models import Client, Project, Sourced
from apps.escalations.forms import DISMISS_OUTCOMES, RESOLVE_OUTCOMES
from apps.escalations.models import Escalation, EscalationEvent
from apps.rules.models import Decision, EvaluationRun, Rule, RuleVersion

# --- errors (for the schema) -----------------------------------------------------------------------


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    detail = serializers.JSONField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    """Every error response: 400, 401, 403, 404, 405, 409, 429 and 500."""

    error = ErrorBodySerializer()


# --- ids in every source system --------------------------------------------------------------------


class SourceIdSerializer(serializers.Serializer):
    system = serializers.CharField(help_text="The connection's slug")
    kind = serializers.CharField(help_text="hubspot, quickbooks, procore, rest or csv")
    object_type = serializers.CharField()
    external_id = serializers.CharField()
    primary = serializers.BooleanField(help_text="The record this entity was synced from")


def source_ids(entity: Sourced, primary_type: str) -> list[dict[str, Any]]:
    """The entity's own upstream record first, then the crosswalk rows linked to it (prefetched)."""
    ids = [
        {
            "system": entity.source.slug,
            "kind": entity.source.kind,
            "object_type": primary_type,
            "external_id": entity.external_id,
            "primary": True,
        }
    ]
    ids += [
        {
            "system": link.connection.slug,
            "kind": link.connection.kind,
            "object_type": link.object_type,
            "external_id": link.external_id,
            "primary": False,
        }
        for link in entity.links.all()  # type: ignore[attr-defined]
    ]
    return ids


class ClientRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Client
        fields = ["id", "name"]


class ProjectRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "number", "name"]


class ClientSerializer(serializers.ModelSerializer):
    owner = serializers.SerializerMethodField()
    source_ids = serializers.SerializerMethodField()
    flagged = serializers.BooleanField(read_only=True, help_text="Has an open escalation")

    class Meta:
        model = Client
        fields = ["id", "name", "domain", "owner", "renewal_date", "flagged", "source_ids", "synced_at"]

    @extend_schema_field(
        inline_serializer(
            "Owner", {"name": serializers.CharField(), "email": serializers.EmailField()}, allow_null=True
        )
    )
    def get_owner(self, obj: Client) -> dict[str, str] | None:
        return {"name": obj.owner.name, "email": obj.owner.email} if obj.owner else None

    @extend_schema_field(SourceIdSerializer(many=True))
    def get_source_ids(self, obj: Client) -> list[dict[str, Any]]:
        return source_ids(obj, "client")


# SPEC "Actions": what flags a project, on the dashboard and in /api/projects/?flagged=true alike.
PROJECT_FLAGGED_HELP = (
    "Flagged on the dashboard: an open escalation whose rule version includes flag_dashboard concerns "
    "the project or one of its change orders or submittals"
)


class ProjectSerializer(serializers.ModelSerializer):
    client = ClientRefSerializer(allow_null=True)
    source_ids = serializers.SerializerMethodField()
    flagged = serializers.BooleanField(read_only=True, help_text=PROJECT_FLAGGED_HELP)

    class Meta:
        model = Project
        fields = [
            "id",
            "number",
            "name",
            "client",
            "contract_value",
            "schedule_status",
            "start_date",
            "completion_date",
            "flagged",
            "source_ids",
            "synced_at",
        ]

    @extend_schema_field(SourceIdSerializer(many=True))
    def get_source_ids(self, obj: Project) -> list[dict[str, Any]]:
        return source_ids(obj, "project")


# --- escalations -----------------------------------------------------------------------------------


class EscalationEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = EscalationEvent
        fields = ["kind", "actor", "via", "note", "data", "created_at"]


class EscalationSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule.key", read_only=True)
    rule_version = serializers.IntegerField(source="rule_version.number", read_only=True)
    client = ClientRefSerializer(allow_null=True, read_only=True)
    project = ProjectRefSerializer(allow_null=True, read_only=True)

    class Meta:
        model = Escalation
        fields = [
            "id",
            "rule",
            "rule_version",
            "subject_type",
            "subject_id",
            "subject_label",
            "client",
            "project",
            "route",
            "severity",
            "priority",
            "status",
            "outcome",
            "summary",
            "fire_count",
            "opened_at",
            "last_fired_at",
            "acknowledged_at",
            "closed_at",
        ]


class EscalationDetailSerializer(EscalationSerializer):
    """One escalation with its frozen evidence (facts, per-condition explanation) and its timeline."""

    events = EscalationEventSerializer(many=True, read_only=True)
    evidence = serializers.JSONField(
        read_only=True, help_text="Facts and per-condition results when it opened / last fired"
    )

    class Meta(EscalationSerializer.Meta):
        fields = [*EscalationSerializer.Meta.fields, "evidence", "events"]


class NoteSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class AddNoteSerializer(NoteSerializer):
    note = serializers.CharField(max_length=2000, help_text="The note to add to the timeline")


class ResolveSerializer(NoteSerializer):
    outcome = serializers.ChoiceField(choices=[(o.value, o.label) for o in RESOLVE_OUTCOMES])


class DismissSerializer(NoteSerializer):
    outcome = serializers.ChoiceField(
        choices=[(o.value, o.label) for o in DISMISS_OUTCOMES],
        required=False,
        default=Escalation.Outcome.FALSE_ALARM.value,
    )


# --- rules and decisions ---------------------------------------------------------------------------


class RuleVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = RuleVersion
        fields = ["number", "spec", "spec_hash", "published_at"]


class RuleSerializer(serializers.ModelSerializer):
    live_version = RuleVersionSerializer(allow_null=True, read_only=True)

    class Meta:
        model = Rule
        fields = ["id", "key", "name", "subject_type", "enabled", "live_version", "updated_at"]


class DecisionSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule_version.rule.key", read_only=True)
    rule_version = serializers.IntegerField(source="rule_version.number", read_only=True)

    class Meta:
        model = Decision
        fields = [
            "id",
            "rule",
            "rule_version",
            "subject_type",
            "subject_id",
            "outcome",
            "trigger",
            "evaluated_at",
            "summary",
            "suppressed",
            "escalation",
            "facts",
            "explanation",
        ]


class EvaluationRunSerializer(serializers.ModelSerializer):
    """A bulk run's summary; its subject ids are left out (100k of them in a nightly run)."""

    state = serializers.ChoiceField(
        choices=["queued", "evaluating", "complete", "failed"],
        read_only=True,
        help_text="A run publishing queued waits for a worker, evaluates, then completes (or fails)",
    )

    class Meta:
        model = EvaluationRun
        fields = [
            "id",
            "subject_type",
            "trigger",
            "state",
            "queued_at",
            "started_at",
            "evaluated_at",
            "completed_at",
            "subjects",
            "outcomes",
            "progress",
            "error",
            "ages",
        ]


# --- connections -----------------------------------------------------------------------------------


class StreamStateSerializer(serializers.ModelSerializer):
    class Meta:
        model = StreamState
        fields = ["stream", "last_success_at", "record_count"]


class ConnectionSerializer(serializers.ModelSerializer):
    """A connection's public face. An explicit field list: credentials, webhook secrets and ``options``
    (vendor settings, which may hold account ids) are never serialised, and ``base_url`` loses any
    user:password part."""

    base_url = serializers.SerializerMethodField()
    has_credentials = serializers.SerializerMethodField()
    has_webhook_secret = serializers.SerializerMethodField()
    streams = StreamStateSerializer(many=True, read_only=True)

    class Meta:
        model = Connection
        fields = [
            "slug",
            "kind",
            "base_url",
            "schedule",
            "enabled",
            "has_credentials",
            "has_webhook_secret",
            "streams",
            "created_at",
            "updated_at",
        ]

    def get_base_url(self, obj: Connection) -> str:
        if not obj.base_url:
            return ""
        parts = urlsplit(obj.base_url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))

    def get_has_credentials(self, obj: Connection) -> bool:
        return bool(obj.credentials_encrypted)

    def get_has_webhook_secret(self, obj: Connection) -> bool:
        return bool(obj.webhook_secret_encrypted)


class ResyncSerializer(serializers.Serializer):
    full = serializers.BooleanField(
        required=False, default=False, help_text="Re-read every record instead of since the cursor"
    )


class PublishResponseSerializer(serializers.Serializer):
    rule = serializers.CharField()
    version = serializers.IntegerField(help_text="The live version after the call")
    published = serializers.BooleanField(help_text="False when the draft equals the live version")
    evaluation_run = serializers.IntegerField(
        allow_null=True,
        help_text="The run evaluating the new version over every subject of its type now "
        "(/api/evaluation-runs/{id}/); null when nothing new was published or the rule is disabled",
    )


class ResyncResponseSerializer(serializers.Serializer):
    connection = serializers.CharField()
    full = serializers.BooleanField()
