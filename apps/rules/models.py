from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class SubjectType(models.TextChoices):
    CHANGE_ORDER = "change_order", "Change order"
    PROJECT = "project", "Project"
    CLIENT = "client", "Client"
    SUBMITTAL = "submittal", "Submittal"
    DOCUMENT = "document", "Document"


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
    shadow_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="While set, the draft is evaluated nightly beside the live version without acting",
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
    repeat of the same non-match keeps only the slim columns when evaluated on its own, and no row at
    all in a bulk run, which summarises its repeats in an :class:`EvaluationRun`. A (rule, subject)
    pair that was never decided otherwise counts as ``not_matched``.
    """

    class Verdict(models.TextChoices):
        MATCHED = "matched"
        NOT_MATCHED = "not_matched"
        INSUFFICIENT = "insufficient_data"
        ERROR = "error"

    class Trigger(models.TextChoices):
        SYNC = "sync"
        WEBHOOK = "webhook"
        SCHEDULE = "schedule"
        MANUAL = "manual"
        # An entity-resolution link or merge changed what a subject's facts see (apps/entities/resolution.py).
        RESOLUTION = "resolution"
        PUBLISH = "publish"

    rule_version = models.ForeignKey(  # indexed by Meta.indexes, which lead with it
        RuleVersion, on_delete=models.PROTECT, related_name="decisions", db_index=False
    )
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.BigIntegerField()
    outcome = models.CharField(max_length=20, choices=Verdict.choices)
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
            # Counts per window (the orchestration map, the admin home's top rules) read only these
            # columns of the window's rows: an index-only scan instead of the whole table.
            models.Index(
                fields=["evaluated_at"],
                include=["rule_version", "outcome", "subject_type"],
                name="decision_evaluated_window",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule_version} {self.subject_type}:{self.subject_id} {self.outcome}"


class EvaluationRun(models.Model):
    """One bulk evaluation of a subject type's live rules: the summary of every pair it did not trace.

    A nightly run over 100k subjects and 50 rules makes 5 million (rule, subject) evaluations; nearly all
    repeat the outcome they had (ANCHORS, Rules 6: trace matches and changes, summarise the rest). Those
    get no :class:`Decision` row. The run records which subjects it evaluated and, per rule version, how
    many outcomes of each kind it found and how many decisions it traced. So for any rule, subject and
    run: the subject is in ``subject_ids`` and has a decision of that run (``evaluated_at``), or it
    repeated the outcome of that rule's previous decision for it (``not_matched`` when there is none).
    """

    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    trigger = models.CharField(max_length=10, choices=Decision.Trigger.choices)
    evaluated_at = models.DateTimeField()
    completed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its traced decisions and context snapshots were all written (empty: not finished)",
    )
    subjects = models.PositiveIntegerField(default=0, help_text="Subjects evaluated")
    subject_ids = ArrayField(
        models.BigIntegerField(), default=list, blank=True, help_text="The subjects evaluated, in id order"
    )
    ages = models.JSONField(
        default=dict, blank=True, help_text="{fact: age in seconds of its inputs} when the run evaluated"
    )
    outcomes = models.JSONField(
        default=list,
        blank=True,
        help_text="Per rule version: {rule, version, rule_version_id, matched, not_matched, "
        "insufficient_data, decisions}",
    )
    # A run queued by publishing (SPEC "Outcomes — Publishing") exists from the publish on: queued
    # (``started_at`` empty), evaluating, tracing (``progress`` counts up batch by batch), complete.
    published_versions = models.ManyToManyField(
        RuleVersion,
        blank=True,
        related_name="publish_runs",
        help_text="The versions whose publishing queued it",
    )
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When publishing queued it")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When a worker began evaluating")
    progress = models.JSONField(
        default=dict,
        blank=True,
        help_text="{traced, to_trace, opened, refired, suppressed, auto_resolved}, updated after each batch",
    )
    error = models.TextField(blank=True, help_text="Why the run failed (empty: it did not)")

    class Meta:
        ordering = ["-evaluated_at", "-id"]
        indexes = [
            models.Index(fields=["subject_type", "-evaluated_at"]),
            # A run's entries wait in the index's pending list (64 MB: room for a run of millions) until
            # the run merges them beside its traces (apps.rules.evaluation.runs.subject_index_merge).
            GinIndex(fields=["subject_ids"], name="rules_evalrun_subjects_gin", gin_pending_list_limit=65536),
        ]

    def __str__(self) -> str:
        when = timezone.localtime(self.evaluated_at)
        return f"{self.subject_type} run {when:%Y-%m-%d %H:%M} ({self.subjects} subjects)"

    @property
    def state(self) -> str:
        """queued, evaluating, complete or failed (a run that was never queued starts evaluating)."""
        if self.error:
            return "failed"
        if self.completed_at is not None:
            return "complete"
        if self.queued_at is not None and self.started_at is None:
            return "queued"
        return "evaluating"


class ContextSnapshot(models.Model):
    """A subject's facts as its first bulk evaluation saw them, for backtests of subjects no decision
    traced (their ages are the run's). Written once per subject; a traced decision's facts are newer."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="snapshots")
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.BigIntegerField()
    values = models.JSONField(
        help_text="The facts' values, in the order of the sorted fact names of the run's ages "
        "(older snapshots: {fact: value})"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject_type", "subject_id"], name="uniq_context_snapshot")
        ]

    def __str__(self) -> str:
        return f"{self.subject_type}:{self.subject_id} context"


class SubjectState(models.Model):
    """The last outcome of a rule for a subject, its cooldown and snooze: the race-safe claim point.

    Bulk runs create states only for the pairs they trace: a pair with no state has never been
    decided otherwise than ``not_matched``.
    """

    rule = models.ForeignKey(  # indexed by uniq_rule_subject_state, which leads with it
        Rule, on_delete=models.CASCADE, related_name="states", db_index=False
    )
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.BigIntegerField()
    last_outcome = models.CharField(max_length=20, choices=Decision.Verdict.choices)
    last_evaluated_at = models.DateTimeField(
        help_text="When the last decision of this pair was recorded (a bulk run's quiet repeats leave it)"
    )
    cooldown_until = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    # Indexed only where set (Meta): nearly every state is never snoozed, and a first run of 50 rules
    # inserts ~34k states, each of which paid a B-tree insert of NULL.
    snoozed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    snooze_reason = models.CharField(
        max_length=300, blank=True, help_text="Why the pair is snoozed: required with an expiry"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject_type", "subject_id"], name="uniq_rule_subject_state"
            ),
            # A snooze has an owner, an expiry and a reason (ANCHORS, Rules 8: a forgotten silence hid
            # real alerts); a reason of blanks is no reason.
            models.CheckConstraint(
                condition=models.Q(snoozed_until__isnull=True) | models.Q(snooze_reason__regex=r"\S"),
                name="snooze_needs_a_reason",
            ),
        ]
        indexes = [
            models.Index(
                fields=["snoozed_by"], condition=models.Q(snoozed_by__isnull=False), name="state_snoozed_by"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule.key} {self.subject_type}:{self.subject_id} {self.last_outcome}"

    def clean(self) -> None:
        self.snooze_reason = (self.snooze_reason or "").strip()
        if self.snoozed_until is not None and not self.snooze_reason:
            raise ValidationError({"snooze_reason": "A snooze needs a reason: say why it is silenced."})


class PendingEvaluation(models.Model):
    """A subject whose inputs changed and that waits for evaluation: the coalescing queue.

    Written in the same transaction as the change that caused it, one row per subject however many
    changes arrive. A flush claims rows for a lease, evaluates them in the evaluation's own transactions
    and then deletes the rows it still holds: a subject marked again meanwhile loses the claim and stays
    queued, a failed evaluation is tried again later (backing off), and a worker killed mid-evaluation
    leaves its rows to be claimed again when the lease ends — so a burst of deliveries for one subject is
    evaluated once, and nothing is lost.
    """

    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.BigIntegerField()
    trigger = models.CharField(max_length=10, choices=Decision.Trigger.choices)
    queued_at = models.DateTimeField()
    claim = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="A claim's lease, or after a failed evaluation when to try again"
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Failed evaluations so far")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject_type", "subject_id"], name="uniq_pending_evaluation")
        ]
        indexes = [
            models.Index(fields=["queued_at"]),
            # A flush finds its own rows by their claim. Marks are written unclaimed, so the index holds
            # claimed rows only: a sync marking 157k subjects paid a B-tree insert of NULL for each.
            models.Index(fields=["claim"], name="pending_claimed", condition=models.Q(claim__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.subject_type}:{self.subject_id} ({self.trigger})"


class ShadowRun(models.Model):
    """One evaluation of a rule's draft beside its live version, over every subject, without acting.

    The draft as it was is kept (``spec``), since the draft may change between runs; the sample ids let an
    operator open the subjects the draft would add or drop.
    """

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="shadow_runs")
    ran_at = models.DateTimeField()
    spec = models.JSONField(help_text="The draft evaluated, in the rules file shape")
    live_version = models.ForeignKey(
        RuleVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subjects = models.PositiveIntegerField(help_text="Subjects evaluated")
    counts = models.JSONField(help_text="The draft's outcomes: {outcome: count}")
    live_counts = models.JSONField(default=dict, blank=True, help_text="The live version's outcomes")
    would_match = models.PositiveIntegerField()
    added = models.PositiveIntegerField(help_text="Matched by the draft, not by the live version")
    removed = models.PositiveIntegerField(help_text="Matched by the live version, not by the draft")
    sample_ids = models.JSONField(default=list, blank=True)
    added_ids = models.JSONField(default=list, blank=True)
    removed_ids = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, help_text="Why the draft could not be evaluated")

    class Meta:
        ordering = ["-ran_at", "-id"]
        indexes = [models.Index(fields=["rule", "-ran_at"])]

    def __str__(self) -> str:
        return f"{self.rule.key} shadow {timezone.localtime(self.ran_at):%Y-%m-%d %H:%M}"

    @property
    def rule_words(self) -> str:
        """The rule its samples were matched by, as the draft named it then: ``co-exec-review — Large
        change order on a thin-margin project``."""
        name = self.spec.get("name") if isinstance(self.spec, dict) else ""
        return f"{self.rule.key} — {name}" if name else self.rule.key


class RulesSettings(models.Model):
    """Settings administrators change without a deploy (one row, ``pk=1``)."""

    publish_confirm_threshold = models.PositiveIntegerField(
        default=25,
        help_text="Ask before publishing a draft that newly matches or drops more subjects than this",
    )

    class Meta:
        verbose_name = "rules settings"
        verbose_name_plural = "rules settings"

    def __str__(self) -> str:
        return "Rules settings"

    @classmethod
    def load(cls) -> RulesSettings:
        settings_row, _created = cls.objects.get_or_create(pk=1)
        return settings_row


class CustomFact(models.Model):
    """An operator-defined fact, ``custom.<key>`` (SPEC "Operator-defined facts"). Every save of its
    definition in admin is a new immutable :class:`CustomFactVersion`; ``current`` is the one rules read.
    Key, subject type, type and unit never change (rules that read the fact were validated against them)."""

    key = models.SlugField(max_length=60, unique=True, help_text="The fact is named custom.<key>")
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    current = models.ForeignKey(
        "CustomFactVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"custom.{self.key}"

    @property
    def name(self) -> str:
        return f"custom.{self.key}"

    @property
    def label(self) -> str:
        """What people read for it: its current version's label, else its key in words (as a fact
        without a label reads)."""
        from apps.rules.engine.catalogue import words_of

        spec = self.current.spec if self.current is not None else {}
        return str(spec.get("label") or words_of(self.key))


class CustomFactVersion(models.Model):
    """One saved definition of a custom fact (never updated; PostgreSQL refuses UPDATE). Decisions
    record the version of every custom fact in their context."""

    fact = models.ForeignKey(CustomFact, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField(help_text="The validated definition (customfacts.Definition.to_dict)")
    saved_at = models.DateTimeField()
    saved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["fact", "-number"]
        constraints = [models.UniqueConstraint(fields=["fact", "number"], name="uniq_custom_fact_version")]

    def __str__(self) -> str:
        return f"custom.{self.fact.key} v{self.number}"
