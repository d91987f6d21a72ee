from __future__ import annotations

from django.conf import settings
from django.db import models


class SubjectType(models.TextChoices):
    CHANGE_ORDER = "change_order", "Change order"
    PROJECT = "project", "Project"
    CLIENT = "client", "Client"
    SUBMITTAL = "submittal", "Submittal"


class Rule(models.Model):
    """A threshold rule operations managers edit. ``draft`` is the working copy (the SPEC rule shape);
    publishing freezes it into an immutable :class:`RuleVersion` that decisions point at."""

    key = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    draft = models.JSONField(help_text="The rule as in the rules file (key, name, subject, when, route, ...)")
    enabled = models.BooleanField(default=True)
    live_version = models.ForeignKey(
        "RuleVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class RuleVersion(models.Model):
    """An immutable published version of a rule (never updated; PostgreSQL refuses UPDATE)."""

    rule = models.ForeignKey(Rule, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=64)
    published_at = models.DateTimeField()
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["rule", "-number"]
        constraints = [models.UniqueConstraint(fields=["rule", "number"], name="uniq_rule_version")]

    def __str__(self) -> str:
        return f"{self.rule.key} v{self.number}"

    @property
    def route(self) -> str:
        return str(self.spec.get("route", "standard"))

    @property
    def actions(self) -> list[str]:
        return list(self.spec.get("actions", []))


class Decision(models.Model):
    """One evaluation of one rule version on one subject: outcome, inputs and why.

    Matches and changes of outcome keep the full trace (``facts`` with ages, ``explanation``); a
    repeat of the same non-match keeps only the slim columns.
    """

    class Outcome(models.TextChoices):
        MATCHED = "matched"
        NOT_MATCHED = "not_matched"
        INSUFFICIENT = "insufficient_data"
        ERROR = "error"

    class Trigger(models.TextChoices):
        SYNC = "sync"
        WEBHOOK = "webhook"
        SCHEDULE = "schedule"
        MANUAL = "manual"

    rule_version = models.ForeignKey(RuleVersion, on_delete=models.PROTECT, related_name="decisions")
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.BigIntegerField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    evaluated_at = models.DateTimeField()
    facts = models.JSONField(null=True, blank=True, help_text="{fact: {value, age_s}}")
    explanation = models.JSONField(null=True, blank=True)
    summary = models.TextField(blank=True)
    suppressed = models.CharField(max_length=200, blank=True, help_text="Why no action followed a match")
    escalation = models.ForeignKey(
        "escalations.Escalation", null=True, blank=True, on_delete=models.SET_NULL, related_name="decisions"
    )

    class Meta:
        ordering = ["-evaluated_at", "-id"]
        indexes = [
            models.Index(fields=["subject_type", "subject_id", "-evaluated_at"]),
            models.Index(fields=["rule_version", "outcome"]),
        ]

    def __str__(self) -> str:
        return f"{self.rule_version} {self.subject_type}:{self.subject_id} {self.outcome}"


class SubjectState(models.Model):
    """The last outcome of a rule for a subject, its cooldown and snooze: the race-safe claim point."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="states")
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.BigIntegerField()
    last_outcome = models.CharField(max_length=20, choices=Decision.Outcome.choices)
    last_evaluated_at = models.DateTimeField()
    cooldown_until = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    snoozed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    snooze_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject_type", "subject_id"], name="uniq_rule_subject_state"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule.key} {self.subject_type}:{self.subject_id} {self.last_outcome}"
