from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q

from .crypto import decrypt_json, encrypt_json


def kind_choices() -> list[tuple[str, str]]:
    """The registered connector kinds, as ``(kind, label)``: adding a vendor's folder adds its choice."""
    # The registry imports the kinds' entity models, which import this module: read it when asked.
    from apps.connectors.kinds import KINDS

    return [(name, cls.label) for name, cls in KINDS.items()]


class Connection(models.Model):
    """One upstream system Fulcrum syncs from and writes back to (a HubSpot portal, a QBO realm, ...)."""

    slug = models.SlugField(
        unique=True, help_text="Used in webhook URLs: /webhooks/SLUG/ (slug crm: /webhooks/crm/)"
    )
    kind = models.CharField(max_length=20, choices=kind_choices)
    base_url = models.URLField(blank=True)
    credentials_encrypted = models.TextField(blank=True, editable=False)
    webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    schedule = models.CharField(max_length=100, blank=True, help_text="cron: minute hour day month weekday")
    options = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def credentials(self) -> dict[str, Any]:
        return decrypt_json(self.credentials_encrypted) or {}

    @credentials.setter
    def credentials(self, value: dict[str, Any]) -> None:
        self.credentials_encrypted = encrypt_json(value) if value else ""

    @property
    def webhook_secrets(self) -> list[str]:
        """Current secret first, then previous ones still accepted during rotation."""
        value = decrypt_json(self.webhook_secret_encrypted)
        if not value:
            return []
        return [value] if isinstance(value, str) else list(value)

    @webhook_secrets.setter
    def webhook_secrets(self, value: str | list[str]) -> None:
        self.webhook_secret_encrypted = encrypt_json(value) if value else ""


class StreamState(models.Model):
    """Where incremental sync of one stream of one connection stands. Updated in the page's transaction."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="streams")
    stream = models.CharField(max_length=60)
    cursor = models.JSONField(default=dict, blank=True, help_text="{'updated_at': iso, 'id': str}")
    last_success_at = models.DateTimeField(null=True, blank=True)
    record_count = models.IntegerField(default=0)
    fields = models.JSONField(
        default=list, blank=True, help_text="Upstream field paths seen so far (drift is measured against it)"
    )
    missing_fields = models.JSONField(
        default=list, blank=True, help_text="Known fields reported missing and not seen since"
    )
    last_reconciled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "stream"], name="uniq_stream_state")]

    def __str__(self) -> str:
        return f"{self.connection.slug}/{self.stream}"


class SyncRunQuerySet(models.QuerySet["SyncRun"]):
    def unpublished(self) -> SyncRunQuerySet:
        """Finished runs whose changes are not yet linked and marked for evaluation (their worker died
        before it, or their sync has not reached its end): the connection's next publish takes them."""
        return self.filter(published_at__isnull=True).exclude(status=SyncRun.Status.RUNNING)


class SyncRun(models.Model):
    """One sync of one stream. At most one runs per (connection, stream) at a time."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        PARTIAL = "partial"
        FAILED = "failed"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="runs")
    stream = models.CharField(max_length=60)
    full = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(
        max_length=120,
        blank=True,
        help_text="host:pid of the process running it (dead ones are expired at once)",
    )
    published_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When what the run stored was linked and marked for evaluation (empty: not yet; the "
        "connection's next sync does it)",
    )

    objects = SyncRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # The runs a sync publishes besides its own: usually none, found without reading the others.
            models.Index(
                fields=["connection"], condition=Q(published_at__isnull=True), name="sync_run_unpublished"
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "stream"],
                condition=Q(status="running"),
                name="one_running_sync_per_stream",
            )
        ]

    def __str__(self) -> str:
        return f"{self.connection.slug}/{self.stream} {self.status}"


class QuarantinedRecord(models.Model):
    """An upstream record that failed validation: kept with its reason, never silently dropped."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="quarantine")
    stream = models.CharField(max_length=60)
    external_id = models.CharField(max_length=64, blank=True)
    payload = models.JSONField()
    reason = models.TextField()
    run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.connection.slug}/{self.stream}/{self.external_id}: {self.reason[:40]}"


class SchemaDrift(models.Model):
    """A page whose records carried upstream fields never seen before, or lacked ones always seen."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="drift")
    stream = models.CharField(max_length=60)
    run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)
    new_fields = models.JSONField(default=list, blank=True)
    missing_fields = models.JSONField(default=list, blank=True)
    example_external_id = models.CharField(max_length=64, blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-detected_at"]

    def __str__(self) -> str:
        return f"{self.connection.slug}/{self.stream}: +{len(self.new_fields)} -{len(self.missing_fields)}"


class WebhookDelivery(models.Model):
    """One POST to /webhooks/<slug>/, stored before it is answered (the inbox; dj-stripe's request log).

    Accepted deliveries are unique on (connection, event_id): a redelivery is answered "duplicate" and changes
    nothing. Rejected ones (bad signature, stale timestamp) are kept for forensics, never processed, and never
    block the genuine delivery with the same event id. Headers are stored with secret values redacted.
    """

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSING = "processing"
        PROCESSED = "processed"
        FAILED = "failed"
        REJECTED = "rejected"

    connection = models.ForeignKey(  # indexed by webhook_delivery_arrival, which leads with it
        Connection, on_delete=models.CASCADE, related_name="webhook_deliveries", db_index=False
    )
    event_id = models.CharField(max_length=255, help_text="The vendor's event id, or a hash of the raw body")
    received_at = models.DateTimeField()
    headers = models.JSONField(default=dict, blank=True, help_text="As received; secret values redacted")
    body = models.BinaryField(help_text="The raw body, byte for byte")
    signature_valid = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RECEIVED)
    status_changed_at = models.DateTimeField(
        help_text="When the status last changed or the sweeper re-queued it"
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="What processing did with the events: applied, merged, and ignored counted by event type",
    )
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "event_id"],
                condition=~Q(status="rejected"),
                name="uniq_accepted_webhook_delivery",
            )
        ]
        indexes = [
            # The sweeper: rows not yet processed, oldest status change first.
            models.Index(
                fields=["status", "status_changed_at"],
                condition=Q(status__in=["received", "processing", "failed"]),
                name="webhook_delivery_pending",
            ),
            # A connection's deliveries by arrival: the QuickBooks catch-up looks for the previous one.
            models.Index(fields=["connection", "received_at"], name="webhook_delivery_arrival"),
            # The cap on stored rejected deliveries per connection and sender.
            models.Index(
                fields=["connection", "remote_addr", "received_at"],
                condition=Q(status="rejected"),
                name="webhook_delivery_rejected",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id}/{self.event_id} {self.status}"
