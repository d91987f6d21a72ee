"""Data-quality findings: what is wrong with the synced data, since when, and whether it still is."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Finding(models.Model):
    """One problem found by a scan: about one record (``subject_type`` + ``subject_id``) or one stream.

    ``key`` names the problem and its subject (``orphan:change_order.project:change_order:42``); at most one
    open finding per key, so a scan that sees it again only moves ``last_seen``. A scan that no longer sees
    it sets ``resolved_at``; if it comes back later it is a new finding.
    """

    class Kind(models.TextChoices):
        FRESHNESS = "freshness"
        MISSING_FIELD = "missing_field", "missing field"
        ORPHAN = "orphan"
        CONFLICT = "conflict", "cross-system conflict"
        VOLUME_DROP = "volume_drop", "volume drop"

    class Severity(models.TextChoices):
        WARN = "warn"
        ERROR = "error"

    key = models.CharField(max_length=255)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    check_name = models.CharField(max_length=60, help_text="Which check, e.g. project.client")
    severity = models.CharField(max_length=5, choices=Severity.choices)
    subject_type = models.CharField(max_length=30, blank=True)
    subject_id = models.BigIntegerField(null=True, blank=True)
    connection = models.ForeignKey(
        "connectors.Connection", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    stream = models.CharField(max_length=60, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=Q(resolved_at__isnull=True), name="one_open_finding"
            )
        ]
        indexes = [
            models.Index(
                fields=["kind", "severity"], condition=Q(resolved_at__isnull=True), name="open_findings"
            ),
            models.Index(fields=["subject_type", "subject_id"]),
        ]

    def __str__(self) -> str:
        subject = self.subject_id if self.subject_id is not None else self.stream
        return f"{self.severity} {self.kind} {self.check_name} {self.subject_type}:{subject}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class VolumeBaseline(models.Model):
    """Live records of one entity from one connection, as last accepted: what a sudden drop is measured from.

    While a drop is open the baseline stays where it was, so the finding holds until the count recovers or a
    person accepts the new count.
    """

    connection = models.ForeignKey("connectors.Connection", on_delete=models.CASCADE, related_name="+")
    entity = models.CharField(max_length=30)
    count = models.IntegerField()
    measured_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "entity"], name="uniq_volume_baseline")]

    def __str__(self) -> str:
        return f"{self.connection_id}/{self.entity}: {self.count}"
