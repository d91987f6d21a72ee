from __future__ import annotations

from django.db import models
from django.db.models import Q


class EscalationQuerySet(models.QuerySet):
    def open(self) -> EscalationQuerySet:
        return self.filter(status__in=Escalation.OPEN_STATES)

    def visible_to(self, user: object) -> EscalationQuerySet:
        """Object-level scope: executives, operators and admins see all; account managers their clients'."""
        from apps.accounts.roles import can_see_all_escalations

        if can_see_all_escalations(user):
            return self
        return self.filter(client__owner__user=user)


class Escalation(models.Model):
    """A matched rule on a subject that needs a person: a state machine with an event log.

    At most one open escalation per (rule, subject), enforced by a partial unique index; a re-firing
    rule bumps ``fire_count`` and refreshes the evidence. The rule version and its evidence are frozen
    here when the escalation opens.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"
        DISMISSED = "dismissed"

    class Route(models.TextChoices):
        EXECUTIVE = "executive"
        STANDARD = "standard"

    class Severity(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    class Outcome(models.TextChoices):
        ACTIONED = "actioned"
        APPROVED = "approved"
        REJECTED = "rejected"
        NO_ACTION_NEEDED = "no_action_needed"
        FALSE_ALARM = "false_alarm"
        DUPLICATE = "duplicate"
        AUTO_RESOLVED = "auto_resolved"

    OPEN_STATES = (Status.OPEN, Status.ACKNOWLEDGED)
    SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}

    rule = models.ForeignKey("rules.Rule", on_delete=models.PROTECT, related_name="escalations")
    rule_version = models.ForeignKey(
        "rules.RuleVersion", on_delete=models.PROTECT, related_name="escalations"
    )
    subject_type = models.CharField(max_length=20)
    subject_id = models.BigIntegerField()
    subject_label = models.CharField(max_length=300)
    client = models.ForeignKey(
        "entities.Client", null=True, blank=True, on_delete=models.SET_NULL, related_name="escalations"
    )
    project = models.ForeignKey(
        "entities.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="escalations"
    )
    route = models.CharField(max_length=10, choices=Route.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    priority = models.IntegerField()
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    summary = models.TextField(help_text="Why, in one line")
    evidence = models.JSONField(help_text="Facts and per-condition results when it opened / last fired")
    fire_count = models.PositiveIntegerField(default=1)
    opened_at = models.DateTimeField()
    last_fired_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    objects = EscalationQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject_type", "subject_id"],
                condition=Q(status__in=["open", "acknowledged"]),
                name="one_open_escalation_per_rule_subject",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "route"]),
            models.Index(fields=["subject_type", "subject_id"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.rule.key} on {self.subject_label}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATES


class EscalationEvent(models.Model):
    """Append-only timeline of an escalation: who did what, when, and from where."""

    class Via(models.TextChoices):
        WEB = "web"
        EMAIL = "email"
        API = "api"
        SYSTEM = "system"

    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=30)
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=10, choices=Via.choices)
    note = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor}"


class Delivery(models.Model):
    """The outbox: one external action for one target, delivered at least once, recorded exactly once.

    ``idempotency_key`` is unique (escalation, action, target), so a retried evaluation never queues a
    second email; upstream write-backs send the key so the far side can drop duplicates too.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        DELIVERED = "delivered"
        FAILED = "failed"
        DEAD = "dead"

    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="deliveries")
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=255)
    idempotency_key = models.CharField(max_length=120, unique=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.action} → {self.target} ({self.state})"
