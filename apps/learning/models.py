from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from apps.rules.models import Rule


class LearningSettings(models.Model):
    """The admin-set knobs of the learning loop: one row (pk 1), created on first read.

    A database row rather than settings so that an operations manager can change the cost of a miss
    versus a false alarm without a deploy.
    """

    miss_cost = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("3"), help_text="Cost of one missed true problem"
    )
    false_alarm_cost = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("1"), help_text="Cost of one false alarm"
    )
    min_labels_for_ranking = models.PositiveIntegerField(
        default=200, help_text="Labelled outcomes needed before the learned risk ranking replaces severity"
    )
    shadow_sample_size = models.PositiveIntegerField(
        default=50, help_text="Unflagged subjects sampled per subject type per night"
    )
    shadow_horizon_days = models.PositiveIntegerField(
        default=30,
        help_text="A sampled subject escalated within this many days counts as a miss; after it, as fine",
    )
    retention_days = models.PositiveIntegerField(
        default=90, help_text="Decision payloads (facts, explanation) older than this are pruned"
    )
    cofire_window_hours = models.PositiveIntegerField(
        default=24, help_text="Two rules 'fire together' when they open on one subject within this window"
    )
    max_candidates = models.PositiveIntegerField(
        default=200, help_text="Candidate thresholds tried per numeric condition"
    )
    holdout_fraction = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=Decimal("0.30"),
        help_text="The latest share of labelled cases held out to validate a suggestion (a time split)",
    )
    min_holdout_labels = models.PositiveIntegerField(
        default=20, help_text="Labelled cases the held-out period needs before any suggestion is offered"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "learning settings"

    def __str__(self) -> str:
        return "Learning settings"

    @classmethod
    def load(cls) -> LearningSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class ShadowSample(models.Model):
    """A randomly sampled *unflagged* subject with its facts at sampling time, labelled later.

    Without it every stored label comes from a subject the live rule already flagged, so a stricter or
    looser threshold's misses could never be estimated. ``weight`` is how many unflagged subjects this
    row stands for (population / sample size that night). ``positive`` stays null until the horizon
    has passed (or an escalation arrives first): true if the subject escalated within the horizon.
    """

    subject_type = models.CharField(max_length=20)
    subject_id = models.BigIntegerField()
    sampled_at = models.DateTimeField()
    facts = models.JSONField(help_text="{fact: {value, age_s, ...}} as in Decision.facts")
    weight = models.FloatField(default=1.0)
    positive = models.BooleanField(null=True, blank=True)
    labelled_at = models.DateTimeField(null=True, blank=True)
    escalation = models.ForeignKey(
        "escalations.Escalation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-sampled_at", "-id"]
        indexes = [
            models.Index(fields=["subject_type", "sampled_at"]),
            # The labelling task's scan: unlabelled rows by age.
            models.Index(
                fields=["sampled_at"], condition=models.Q(positive__isnull=True), name="shadow_open"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"shadow {self.subject_type}:{self.subject_id} @ {self.sampled_at:%Y-%m-%d} ({self.rule_words})"
        )

    @property
    def rule_words(self) -> str:
        """The rule the sample speaks for: the one whose escalation labelled it a miss. A sample is drawn
        from subjects no rule flagged, so until then it names none."""
        rule = self.escalation.rule if self.escalation_id and self.escalation else None
        if rule is None:
            return "no rule flagged it"
        return f"{rule.key} — {rule.name}"


class ThresholdSuggestion(models.Model):
    """A proposed new threshold for one numeric condition of a rule version, with current vs proposed.

    ``current`` and ``proposed`` hold the figures over the same stored contexts and labels: matches,
    labelled positives/negatives among the matches, precision, misses, shadow estimates and expected
    cost. Applying one writes a new *draft* of the rule; a person publishes it.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        APPLIED = "applied"
        DISMISSED = "dismissed"
        SUPERSEDED = "superseded"

    rule = models.ForeignKey("rules.Rule", on_delete=models.CASCADE, related_name="threshold_suggestions")
    rule_version = models.ForeignKey("rules.RuleVersion", on_delete=models.CASCADE, related_name="+")
    path = models.CharField(max_length=200, help_text="The condition's path in the rule's tree")
    fact = models.CharField(max_length=100)
    op = models.CharField(max_length=10)
    current_value = models.JSONField()
    proposed_value = models.JSONField()
    current = models.JSONField()
    proposed = models.JSONField()
    newly_matching = models.PositiveIntegerField(default=0)
    no_longer_matching = models.PositiveIntegerField(default=0)
    replayed = models.PositiveIntegerField(default=0, help_text="Stored contexts replayed")
    shadow_rows = models.PositiveIntegerField(default=0, help_text="Labelled shadow samples used")
    miss_cost = models.DecimalField(max_digits=10, decimal_places=2)
    false_alarm_cost = models.DecimalField(max_digits=10, decimal_places=2)
    validation = models.JSONField(
        default=dict,
        blank=True,
        help_text="The time split: learning and held-out periods, each with current and proposed figures",
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule_version", "path"],
                condition=models.Q(status="open"),
                name="one_open_suggestion_per_condition",
            )
        ]

    def __str__(self) -> str:
        return f"{self.fact} {self.op} {self.current_value} → {self.proposed_value}"

    @property
    def cost_delta(self) -> float:
        return float(self.proposed["expected_cost"]) - float(self.current["expected_cost"])


class ReportedMiss(models.Model):
    """A subject a person says should have been escalated, with what was done about it.

    ``facts`` are the subject's stored facts as of ``missed_at`` (the newest stored decision context at
    or before it; computed now when none is stored), so that a miss is judged on the facts of its time
    like every other label. ``rule`` is optional: without it the miss counts for every rule of the
    subject type.
    """

    class Outcome(models.TextChoices):
        ACTIONED = "actioned"
        APPROVED = "approved"
        REJECTED = "rejected"

    subject_type = models.CharField(max_length=20)
    subject_id = models.BigIntegerField()
    subject_label = models.CharField(max_length=300)
    rule = models.ForeignKey(
        "rules.Rule", null=True, blank=True, on_delete=models.SET_NULL, related_name="reported_misses"
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    note = models.TextField(blank=True)
    missed_at = models.DateTimeField(help_text="When it should have been escalated")
    facts = models.JSONField(help_text="{fact: {value, age_s}} as of missed_at")
    facts_from = models.CharField(max_length=40, help_text="Where the facts came from")
    reported_at = models.DateTimeField()
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-reported_at", "-id"]
        indexes = [models.Index(fields=["subject_type", "missed_at"])]

    def __str__(self) -> str:
        return f"missed {self.subject_label} ({self.outcome})"


class BacktestRun(models.Model):
    """A backtest started from admin over a period too large to run inside the request.

    A worker replays it (``apps.learning.tasks.run_backtest``), writing ``progress`` (contexts replayed)
    as it goes and the figures into ``result`` when done; the admin page reloads until then.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    rule_key = models.CharField(max_length=100)
    use_draft = models.BooleanField(default=False, help_text="Replay the rule's draft instead of live")
    draft = models.JSONField(null=True, blank=True, help_text="The draft as it was when started")
    since = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    expected = models.PositiveIntegerField(default=0, help_text="Stored contexts in the period")
    progress = models.PositiveIntegerField(default=0, help_text="Contexts replayed so far")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"backtest {self.rule_key} ({self.status})"


class RiskModel(models.Model):
    """A fitted logistic regression over numeric facts, stored as plain numbers (no pickle).

    Prediction is ``sigmoid(intercept + Σ coef_i × z_i)`` with ``z_i = (x_i − mean_i) / scale_i`` for
    the value features and 0/1 for the "missing" indicators; a missing value is imputed with its mean
    (so its z is 0).
    """

    version = models.PositiveIntegerField(unique=True)
    trained_at = models.DateTimeField()
    n_samples = models.PositiveIntegerField()
    n_positive = models.PositiveIntegerField()
    features = models.JSONField(help_text="Fact names, in coefficient order")
    coefficients = models.JSONField(help_text="{feature: coef} for values and '<fact>__missing' indicators")
    intercept = models.FloatField()
    means = models.JSONField()
    scales = models.JSONField()
    metrics = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"risk model v{self.version} (n={self.n_samples})"


class RiskScore(models.Model):
    """The latest learned risk score of a project, with the model version that produced it."""

    project_id = models.BigIntegerField(unique=True)
    risk_model = models.ForeignKey(RiskModel, on_delete=models.CASCADE, related_name="scores")
    score = models.FloatField()
    scored_at = models.DateTimeField()

    class Meta:
        ordering = ["-score"]

    def __str__(self) -> str:
        return f"project {self.project_id}: {self.score:.3f} (v{self.risk_model.version})"


class RuleAnalytics(Rule):
    """Admin entry for the rule analytics page (a proxy: no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "rule analytics"
