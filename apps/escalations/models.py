from __future__ import annotations

import zoneinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from apps.rules.models import Decision

# The rule action that flags the escalation's project on the dashboard and in /api/projects/?flagged=.
FLAG_ACTION = "flag_dashboard"


class EscalationQuerySet(models.QuerySet):
    def open(self) -> EscalationQuerySet:
        return self.filter(status__in=Escalation.OPEN_STATES)

    def flagging(self) -> EscalationQuerySet:
        """Open escalations whose rule version includes ``flag_dashboard``: what flags a project (SPEC
        "Actions"). A semi-join on the few rule versions that have it, by JSON containment."""
        from apps.rules.models import RuleVersion

        flags = RuleVersion.objects.filter(spec__actions__contains=[FLAG_ACTION]).values("pk")
        return self.open().filter(rule_version_id__in=flags)

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
    # What it fired on last (``evidence``) is that match's decision's facts and trace (``evidence_decision``):
    # a re-fire points at its new decision instead of copying them (a nightly run re-fires thousands, and
    # each copy was 2 kB of JSON built, compressed and written). Escalations that fired before migration
    # 0010 keep their copy here until they fire again.
    evidence_copy = models.JSONField(
        default=dict,
        blank=True,
        db_column="evidence",
        help_text="Facts and per-condition results when it last fired, as stored by escalations that fired "
        "before the firing decision was kept (newer ones: empty, see evidence_decision)",
    )
    fire_count = models.PositiveIntegerField(default=1)
    opened_at = models.DateTimeField()
    last_fired_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Escalation policy, frozen when the escalation opens (apps/escalations/policies.py): later edits
    # to the policy or the rule do not rewrite what this escalation does or why it opened.
    policy = models.ForeignKey(
        "EscalationPolicy", null=True, blank=True, on_delete=models.SET_NULL, related_name="escalations"
    )
    policy_snapshot = models.JSONField(default=dict, blank=True, help_text="The policy and its levels")
    # The evidence when it opened is the opening decision's (``opening_evidence``): a new escalation stores a
    # reference, not a second copy of the facts and trace it already stores in ``evidence`` (1.7 kB
    # compressed, which pushed the row past PostgreSQL's 2 kB TOAST threshold). Escalations opened before
    # migration 0008 keep their copy in ``opened_evidence``.
    opened_evidence = models.JSONField(
        default=dict,
        blank=True,
        help_text="The rule evidence when it opened, as stored by escalations opened before the opening "
        "decision was kept (newer ones: empty, see opened_decision)",
    )
    opened_decision = models.ForeignKey(
        "rules.Decision",
        null=True,
        blank=True,
        # Decisions are never deleted (retention empties payloads, and keeps an opening decision's).
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # read through the escalation; retention finds it from the decision's escalation_id
        help_text="The decision that opened it: its facts and trace are the evidence when it opened",
    )
    evidence_decision = models.ForeignKey(
        "rules.Decision",
        null=True,
        blank=True,
        # Decisions are never deleted (retention empties payloads, and keeps this decision's).
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # read through the escalation; retention finds it from the decision's escalation_id
        # Written only by statements that join the decision it names (opening, re-fire): PostgreSQL's own
        # check, deferred to commit, cost 6-10 µs per re-fire (0.07-0.12 s for a warm run's 11,816).
        db_constraint=False,
        help_text="The decision it last fired on (opened or re-fired): its facts and trace are the evidence",
    )
    policy_step = models.PositiveIntegerField(default=0, help_text="Policy steps applied so far")
    policy_level = models.PositiveSmallIntegerField(default=0, help_text="Policy levels processed so far")
    policy_reminders = models.PositiveSmallIntegerField(
        default=0, help_text="Reminders sent for the last level that fired"
    )
    policy_level_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last level fired; reminders count from here"
    )
    next_step_at = models.DateTimeField(null=True, blank=True)
    step_token = models.UUIDField(null=True, blank=True, editable=False)
    step_claimed_until = models.DateTimeField(null=True, blank=True)

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
            # The policy sweeper's and auditor's scan: only rows with a step to come are indexed.
            models.Index(
                fields=["next_step_at"], condition=Q(next_step_at__isnull=False), name="escalation_due_step"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.rule.key} on {self.subject_label}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATES

    # What ``evidence`` reads beyond the row: a query that lists escalations names it in ``select_related``
    # (behind a relation: ``f"escalation__{Escalation.EVIDENCE}"``), or each row reads it on its own; one
    # that loads only some fields (``only``) names ``EVIDENCE_FIELDS``.
    EVIDENCE = "evidence_decision__rule_version"
    EVIDENCE_FIELDS = (
        "evidence_copy",
        "evidence_decision",
        *(f"evidence_decision__{name}" for name in ("facts", "explanation", "outcome")),
        "evidence_decision__rule_version__number",
    )

    @property
    def evidence(self) -> dict[str, Any]:
        """The facts and per-condition results when it last fired (opened or re-fired): the copy an
        escalation that fired before migration 0010 stored; else its firing decision's; else ``{}``."""
        return self._evidence(self.evidence_copy, "evidence_decision")

    @evidence.setter
    def evidence(self, value: dict[str, Any]) -> None:
        self.evidence_copy = value

    @property
    def opening_evidence(self) -> dict[str, Any]:
        """The facts and per-condition results when it opened (``evidence`` follows re-fires): the copy an
        escalation opened before migration 0008 stored; else its opening decision's, as ``evidence`` held
        them then; else (neither kept) ``{}``."""
        return self._evidence(self.opened_evidence, "opened_decision")

    def _evidence(self, copy: dict[str, Any], decision_field: str) -> dict[str, Any]:
        """A stored copy, else the decision's evidence (``_decision_evidence``), else ``{}``."""
        if copy:
            return copy
        try:
            decision = getattr(self, decision_field)
        except ObjectDoesNotExist:  # ``evidence_decision`` has no constraint: a decision deleted by hand
            return {}
        return _decision_evidence(decision) if decision is not None else {}


def _decision_evidence(decision: Decision) -> dict[str, Any]:
    """What an escalation says of a match, read from the match's stored decision (the fields it reads:
    ``Escalation.EVIDENCE_FIELDS``)."""
    return {
        "facts": decision.facts,
        "explanation": (decision.explanation or {}).get("explanation"),
        "outcome": decision.outcome,
        "rule_version": decision.rule_version.number,
    }


class EscalationEvent(models.Model):
    """Append-only timeline of an escalation: who did what, when, and from where.

    Enforced by the database like the audit table: UPDATE, DELETE and TRUNCATE are refused (triggers,
    migration 0005), and an escalation with events cannot be deleted (PROTECT).
    """

    class Via(models.TextChoices):
        WEB = "web"
        EMAIL = "email"
        API = "api"
        SYSTEM = "system"

    escalation = models.ForeignKey(Escalation, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=30)
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=10, choices=Via.choices)
    note = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.headline} by {self.actor_display}"

    # Kinds whose timeline words are not just the kind capitalised.
    HEADLINES = {
        "noted": "Note added",
        "action_skipped": "Action skipped",
        "policy_level": "Escalation policy level reached",
        "policy_level_skipped": "Escalation policy level skipped",
        "policy_reminder": "Reminder sent",
        "policy_reminders_stopped": "Reminders stopped",
    }

    @property
    def headline(self) -> str:
        """What happened, in the timeline's words: "Approved", "Resolved: no action needed", ...

        A decision recorded before approvals had their own kind (a ``resolved`` event with outcome
        ``approved``) reads as the decision it was.
        """
        outcome = str((self.data or {}).get("outcome") or "") if isinstance(self.data, dict) else ""
        if outcome in (Escalation.Outcome.APPROVED, Escalation.Outcome.REJECTED):
            return Escalation.Outcome(outcome).label
        words = self.HEADLINES.get(self.kind, self.kind.replace("_", " ").capitalize())
        if self.kind in ("resolved", "dismissed") and outcome in Escalation.Outcome.values:
            words += f": {Escalation.Outcome(outcome).label.lower()}"
        return words

    @property
    def actor_display(self) -> str:
        """The person's full name when it was recorded (``data.actor_name``), else the username."""
        name = (self.data or {}).get("actor_name") if isinstance(self.data, dict) else None
        return str(name or self.actor)


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
    # Unique by the constraint in Meta: ``unique=True`` on a CharField also builds a second index for LIKE
    # (``varchar_pattern_ops``) that no query uses and every outbox row paid for (a first run of 50
    # rules inserts ~21k).
    idempotency_key = models.CharField(max_length=120)
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
        constraints = [models.UniqueConstraint(fields=["idempotency_key"], name="delivery_idempotency_key")]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            # The per-recipient hourly cap counts recent rows per target.
            models.Index(fields=["target", "created_at"]),
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.action} → {self.target} ({self.state})"


_WEEKDAYS = RegexValidator(r"^[1-7](,[1-7])*$", "ISO weekdays separated by commas: 1 = Monday … 7 = Sunday")


def _validate_timezone(value: str) -> None:
    if value:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError(f"{value!r} is not a known time zone (e.g. America/Chicago)") from exc


class EscalationPolicy(models.Model):
    """Who hears about an open escalation, and when, if nobody acts: ordered levels in business hours.

    The policy for an escalation is the one for its route; the policy with no route is the default.
    Escalations freeze the policy when they open, so editing a policy changes only new escalations.
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    route = models.CharField(
        max_length=10,
        choices=Escalation.Route.choices,
        blank=True,
        unique=True,
        help_text="The route this policy applies to; leave empty for the default policy (one of each)",
    )
    business_days = models.CharField(
        max_length=13, default="1,2,3,4,5", validators=[_WEEKDAYS], help_text="1 = Monday … 7 = Sunday"
    )
    day_start = models.PositiveSmallIntegerField(
        default=9, validators=[MaxValueValidator(23)], help_text="Business hours start (hour)"
    )
    day_end = models.PositiveSmallIntegerField(
        default=17, validators=[MinValueValidator(1), MaxValueValidator(24)], help_text="… and end (hour)"
    )
    timezone = models.CharField(
        max_length=64, blank=True, validators=[_validate_timezone], help_text="Empty: the company's time zone"
    )
    digest_executives = models.BooleanField(
        default=False,
        help_text="Executives get one digest per period listing new escalations instead of one email each",
    )

    class Meta:
        verbose_name_plural = "escalation policies"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.day_end is not None and self.day_start is not None and self.day_end <= self.day_start:
            raise ValidationError({"day_end": "Business hours must end after they start."})


class PolicyLevel(models.Model):
    """One level of a policy: after ``wait_hours`` business hours from opening, if the condition still
    holds, notify the target; optionally remind every ``repeat_hours`` business hours, at most
    ``max_repeats`` times, while the condition holds."""

    class Condition(models.TextChoices):
        NOT_ACKNOWLEDGED = "not_acknowledged", "not acknowledged"
        NOT_RESOLVED = "not_resolved", "not resolved"

    class Target(models.TextChoices):
        ACCOUNT_MANAGER = "account_manager", "the client's account manager"
        EXECUTIVES = "executives", "the executives"
        GROUP = "group", "a group"
        ADDRESS = "address", "an email address"

    policy = models.ForeignKey(EscalationPolicy, on_delete=models.CASCADE, related_name="levels")
    position = models.PositiveSmallIntegerField()
    wait_hours = models.DecimalField(
        max_digits=7, decimal_places=2, help_text="Business hours after the escalation opened"
    )
    condition = models.CharField(max_length=20, choices=Condition.choices, default=Condition.NOT_ACKNOWLEDGED)
    target = models.CharField(max_length=20, choices=Target.choices)
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.PROTECT)
    address = models.EmailField(blank=True)
    repeat_hours = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Remind every N business hours while the condition holds (empty: no reminders)",
    )
    max_repeats = models.PositiveSmallIntegerField(
        default=3, validators=[MaxValueValidator(20)], help_text="At most this many reminders"
    )

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"], name="one_level_per_position"),
        ]

    def __str__(self) -> str:
        return f"{self.policy} level {self.position}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.wait_hours is not None and self.wait_hours <= Decimal(0):
            errors["wait_hours"] = "The wait must be more than zero business hours."
        if self.repeat_hours is not None and self.repeat_hours <= Decimal(0):
            errors["repeat_hours"] = "The reminder interval must be more than zero (or empty for none)."
        if self.target == self.Target.ADDRESS and not self.address:
            errors["address"] = "An address is required when the target is an address."
        if self.target == self.Target.GROUP and self.group_id is None:
            errors["group"] = "A group is required when the target is a group."
        if errors:
            raise ValidationError(errors)


class DigestItem(models.Model):
    """One line of a digest email (a ``Delivery`` with action ``digest``): a new escalation, one the
    hourly cap held back, or a notice of what someone did (``event``)."""

    class Kind(models.TextChoices):
        LISTED = "listed", "new escalation"
        CAPPED = "capped", "held back by the hourly cap"

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="digest_items")
    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="digest_items")
    event = models.ForeignKey(
        EscalationEvent, null=True, blank=True, on_delete=models.CASCADE, related_name="digest_items"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LISTED)
    added_at = models.DateTimeField()

    class Meta:
        ordering = ["added_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "escalation", "event"],
                nulls_distinct=False,
                name="one_digest_item_per_escalation_event",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.escalation_id} in digest {self.delivery_id}"


class SuppressedNotification(models.Model):
    """A notification to a person that was not sent as planned, and why (noise controls).

    Each still reaches the person later, through ``delivery``: quiet hours defer the email itself; a
    digest lists it; past the hourly cap it is rolled into the person's next digest.
    """

    class Reason(models.TextChoices):
        QUIET_HOURS = "quiet_hours", "deferred: quiet hours"
        DIGEST = "digest", "batched into a digest"
        CAPPED = "capped", "rolled into the next digest: hourly cap"

    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="suppressed")
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=255)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    detail = models.CharField(max_length=300, blank=True)
    delivery = models.ForeignKey(
        Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="suppressions"
    )
    deferred_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["reason", "created_at"])]

    def __str__(self) -> str:
        return f"{self.action} → {self.target}: {self.reason}"
