"""Canonical business entities, each tied to the upstream record it came from.

Every synced entity carries ``source`` (the owning connection) and ``external_id`` (its id there),
unique together: sync upserts on that key. Objects that other systems hold for the same client or
project (a QuickBooks customer or job) are rows of :class:`SourceObject`, the crosswalk, linked to the
canonical entity by entity resolution.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class SourcedQuerySet(models.QuerySet):
    def live(self) -> SourcedQuerySet:
        return self.filter(deleted_at__isnull=True)


class Sourced(models.Model):
    """Columns every synced entity shares: where it came from and which version we hold."""

    # Indexed once, by the unique (source, external_id) below: a second index on source alone only cost
    # every insert and update of every synced row a B-tree insert (migration entities 0007).
    source = models.ForeignKey(
        "connectors.Connection", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    external_id = models.CharField(max_length=64)
    source_updated_at = models.DateTimeField(
        help_text="Last-modified time upstream: older never overwrites newer"
    )
    content_hash = models.CharField(
        max_length=32, help_text="Of the normalised fields: unchanged records are skipped"
    )
    synced_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Tombstone: gone upstream")

    objects = SourcedQuerySet.as_manager()

    class Meta:
        abstract = True
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"], name="%(app_label)s_%(class)s_source_key"
            )
        ]


class CrmOwner(Sourced):
    """A CRM user who owns client accounts; linked to a Fulcrum login by email."""

    email = models.EmailField()
    name = models.CharField(max_length=200)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta(Sourced.Meta):
        pass

    def __str__(self) -> str:
        return self.name or self.email


class Client(Sourced):
    """A customer company (from the CRM)."""

    name = models.CharField(max_length=255)
    domain = models.CharField(max_length=255, blank=True, db_index=True)
    owner = models.ForeignKey(
        CrmOwner, null=True, blank=True, on_delete=models.SET_NULL, related_name="clients"
    )
    owner_ref = models.CharField(max_length=64, blank=True, help_text="Owner id in the CRM")
    renewal_date = models.DateField(null=True, blank=True)
    merged_into = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Set when merged as a duplicate: everything that pointed here now points there",
    )

    class Meta(Sourced.Meta):
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Project(Sourced):
    """A job (from the project-management system), linked to its client through accounting."""

    class ScheduleStatus(models.TextChoices):
        ON_TRACK = "on_track"
        AT_RISK = "at_risk"
        BEHIND = "behind"

    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.SET_NULL, related_name="projects"
    )
    name = models.CharField(max_length=255)
    number = models.CharField(max_length=64, blank=True, db_index=True)
    accounting_ref = models.CharField(
        max_length=64, blank=True, help_text="The job's id in accounting (origin_id)"
    )
    contract_value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    schedule_status = models.CharField(max_length=12, choices=ScheduleStatus.choices, blank=True)
    start_date = models.DateField(null=True, blank=True)
    completion_date = models.DateField(null=True, blank=True)
    merged_into = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Set when merged as a duplicate: everything that pointed here now points there",
    )

    class Meta(Sourced.Meta):
        ordering = ["number"]

    def __str__(self) -> str:
        return f"{self.number} {self.name}".strip()


class Vendor(Sourced):
    """A subcontractor or supplier (from the PM system)."""

    name = models.CharField(max_length=255)
    email = models.CharField(max_length=255, blank=True)

    class Meta(Sourced.Meta):
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Milestone(Sourced):
    """A schedule milestone of a project."""

    project = models.ForeignKey(  # indexed by Meta.indexes, which lead with it
        Project, null=True, on_delete=models.CASCADE, related_name="milestones", db_index=False
    )
    project_ref = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    due_date = models.DateField(null=True, blank=True)
    completed_date = models.DateField(null=True, blank=True)

    class Meta(Sourced.Meta):
        indexes = [models.Index(fields=["project", "due_date"])]

    def __str__(self) -> str:
        return self.name


class ChangeOrder(Sourced):
    """A change order on a project, its status normalised from the PM system's words."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        VOID = "void"

    project = models.ForeignKey(  # indexed by Meta.indexes, which lead with it
        Project, null=True, on_delete=models.CASCADE, related_name="change_orders", db_index=False
    )
    project_ref = models.CharField(max_length=64)
    number = models.CharField(max_length=64, blank=True)
    title = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    created_upstream_at = models.DateTimeField()

    class Meta(Sourced.Meta):
        indexes = [models.Index(fields=["project", "created_upstream_at"])]

    def __str__(self) -> str:
        return f"CO {self.number} {self.title}".strip()


class Submittal(Sourced):
    """A submittal on a project from a vendor."""

    project = models.ForeignKey(Project, null=True, on_delete=models.CASCADE, related_name="submittals")
    project_ref = models.CharField(max_length=64)
    vendor = models.ForeignKey(
        Vendor, null=True, blank=True, on_delete=models.SET_NULL, related_name="submittals"
    )
    vendor_ref = models.CharField(max_length=64, blank=True)
    number = models.CharField(max_length=64, blank=True)
    title = models.CharField(max_length=500, blank=True)
    revision = models.IntegerField(default=0)
    status = models.CharField(max_length=60, blank=True)
    due_date = models.DateField(null=True, blank=True)
    returned_date = models.DateField(null=True, blank=True)
    schedule_critical = models.BooleanField(default=False)
    created_upstream_at = models.DateTimeField()

    class Meta(Sourced.Meta):
        pass

    def __str__(self) -> str:
        return f"Submittal {self.number} rev {self.revision}"


class FinancialLine(Sourced):
    """Money from accounting: an invoice, estimate, or one project-charged line of a bill or purchase."""

    class Kind(models.TextChoices):
        INVOICE = "invoice"
        BILL = "bill"
        PURCHASE = "purchase"
        ESTIMATE = "estimate"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    project = models.ForeignKey(  # indexed by Meta.indexes, which lead with it
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="money", db_index=False
    )
    job_ref = models.CharField(max_length=64, blank=True, help_text="The accounting job it is charged to")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    balance = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    txn_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)

    class Meta(Sourced.Meta):
        indexes = [models.Index(fields=["project", "kind"]), models.Index(fields=["source", "job_ref"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.external_id} {self.amount}"


class SourceObject(models.Model):
    """The crosswalk: a client or project as another system knows it (a QuickBooks customer or job).

    ``match_key`` is what exact matching uses (an email domain, a project number); ``client`` and
    ``project`` are set by entity resolution, with how they were matched.
    """

    class Type(models.TextChoices):
        CUSTOMER = "customer"
        JOB = "job"

    connection = models.ForeignKey(  # indexed by uniq_source_object, which leads with it
        "connectors.Connection", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    object_type = models.CharField(max_length=20, choices=Type.choices)
    external_id = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    match_key = models.CharField(max_length=255, blank=True, db_index=True)
    parent_ref = models.CharField(max_length=64, blank=True)
    client = models.ForeignKey(Client, null=True, blank=True, on_delete=models.SET_NULL, related_name="links")
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="links"
    )
    match_method = models.CharField(max_length=40, blank=True)
    source_updated_at = models.DateTimeField()
    content_hash = models.CharField(max_length=32)
    synced_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    merged_into_ref = models.CharField(
        max_length=64,
        blank=True,
        help_text="Merged upstream (a QuickBooks customer merge) into the record with this external id "
        "in the same connection; this one is a tombstone",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "external_id"], name="uniq_source_object"),
            models.CheckConstraint(
                condition=Q(object_type__in=["customer", "job"]), name="source_object_type"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.object_type} {self.external_id} {self.name}"


class ResolutionSettings(models.Model):
    """The fuzzy-matching thresholds, one row edited in admin (``ResolutionSettings.current()``).

    A name score at or above ``auto_link_threshold`` links without a person; from ``review_threshold`` up to
    it the pair waits in the review queue; below, the record becomes an entity of its own.
    """

    auto_link_threshold = models.FloatField(default=92.0)
    review_threshold = models.FloatField(default=75.0)
    updated_at = models.DateTimeField(auto_now=True)
    last_run_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Start of the last resolution pass"
    )

    class Meta:
        verbose_name = verbose_name_plural = "resolution settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(review_threshold__lte=models.F("auto_link_threshold")),
                name="resolution_review_below_auto",
            ),
            models.CheckConstraint(condition=Q(id=1), name="resolution_settings_singleton"),
        ]

    def __str__(self) -> str:
        return f"auto-link ≥ {self.auto_link_threshold:g}, review ≥ {self.review_threshold:g}"

    def save(self, *args: object, **kwargs: object) -> None:
        self.pk = 1
        # New thresholds: the next pass scores every record again, not only what changed since the last.
        self.last_run_at = None
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def current(cls) -> ResolutionSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class MatchCandidate(models.Model):
    """A fuzzy pair: a crosswalk record (left) that may be the same as a canonical client or project (right).

    Unique per pair whatever its status, so a pair decided once ("not a match") is never proposed again.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        LINKED = "linked"
        REJECTED = "rejected"
        MERGED = "merged"

    source_object = models.ForeignKey(SourceObject, on_delete=models.CASCADE, related_name="candidates")
    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.CASCADE, related_name="match_candidates"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="match_candidates"
    )
    score = models.FloatField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    undo = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="What a link or merge changed, so the review queue can undo it (empty otherwise)",
    )

    class Meta:
        ordering = ["-score"]
        constraints = [
            models.UniqueConstraint(fields=["source_object", "client"], name="uniq_candidate_client"),
            models.UniqueConstraint(fields=["source_object", "project"], name="uniq_candidate_project"),
            models.CheckConstraint(
                condition=Q(client__isnull=True) ^ Q(project__isnull=True), name="candidate_one_right"
            ),
        ]
        indexes = [models.Index(fields=["status", "-score"])]

    def __str__(self) -> str:
        return f"{self.source_object.name} ~ {self.right} ({self.score:.0f})"

    @property
    def right(self) -> Client | Project | None:
        return self.client or self.project


class Document(Sourced):
    """One document processed by an AI tool (an invoice, a change-order request, a submittal package).

    What the tool said of it: its classification ``label`` and ``confidence`` (0–1), the fields it extracted
    each with its own confidence (``extracted``: name -> {"value", "confidence"}), and the model and version
    that said so. The reference fields (``project_ref``, ``change_order_ref``, ``invoice_ref``) and names
    (``vendor_name``, ``client_name``) are what entity resolution links it by (``apps.entities.documents``):
    reference numbers first, then names, the review queue between; a document nothing links stays unlinked.
    """

    class LinkMethod(models.TextChoices):
        NONE = "", "unlinked"
        REFERENCE = "reference", "reference number"
        NAME = "name", "exact name"
        FUZZY = "fuzzy", "name score"
        MANUAL = "manual", "a person"

    tool = models.CharField(max_length=100, blank=True, help_text="The AI tool that processed it")
    model_id = models.CharField(max_length=100, blank=True)
    model_version = models.CharField(max_length=64, blank=True, help_text="The tool's API or model version")
    label = models.CharField(max_length=100, blank=True, help_text="The tool's classification (docType)")
    confidence = models.FloatField(null=True, blank=True, help_text="Of the classification, 0–1")
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    amount_confidence = models.FloatField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    vendor_name = models.CharField(max_length=255, blank=True)
    client_name = models.CharField(max_length=255, blank=True)
    project_ref = models.CharField(max_length=64, blank=True, help_text="Job or project number it names")
    change_order_ref = models.CharField(max_length=64, blank=True, help_text="Change order number it names")
    invoice_ref = models.CharField(max_length=64, blank=True, help_text="Invoice id it names")
    document_date = models.DateField(null=True, blank=True)
    analyzed_at = models.DateTimeField(null=True, blank=True, help_text="When the tool analysed it")
    extracted = models.JSONField(
        default=dict, blank=True, help_text="Every extracted field: name -> {value, confidence}"
    )
    project = models.ForeignKey(  # indexed by Meta.indexes, which lead with it
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="documents", db_index=False
    )
    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.SET_NULL, related_name="documents"
    )
    vendor = models.ForeignKey(
        Vendor, null=True, blank=True, on_delete=models.SET_NULL, related_name="documents"
    )
    change_order = models.ForeignKey(  # indexed by Meta.indexes
        ChangeOrder,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="documents",
        db_index=False,
    )
    invoice = models.ForeignKey(
        FinancialLine, null=True, blank=True, on_delete=models.SET_NULL, related_name="documents"
    )
    link_method = models.CharField(max_length=12, choices=LinkMethod.choices, blank=True, default="")

    class Meta(Sourced.Meta):
        indexes = [
            models.Index(fields=["project", "analyzed_at"]),
            models.Index(fields=["change_order"]),
        ]

    def __str__(self) -> str:
        return f"{self.label or 'document'} {self.external_id}"

    @property
    def linked(self) -> bool:
        return any((self.project_id, self.client_id, self.change_order_id, self.invoice_id, self.vendor_id))


class DocumentCandidate(models.Model):
    """A name match for a document that exact references left unlinked: a client or vendor it may name,
    scored between the review and auto-link thresholds, waiting for a person (unique per pair, so a pair
    decided once is never proposed again)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        LINKED = "linked"
        REJECTED = "rejected"

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="candidates")
    client = models.ForeignKey(Client, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    vendor = models.ForeignKey(Vendor, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-score"]
        constraints = [
            models.UniqueConstraint(fields=["document", "client"], name="uniq_doc_candidate_client"),
            models.UniqueConstraint(fields=["document", "vendor"], name="uniq_doc_candidate_vendor"),
            models.CheckConstraint(
                condition=Q(client__isnull=True) ^ Q(vendor__isnull=True), name="doc_candidate_one_right"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document} ~ {self.client or self.vendor} ({self.score:.0f})"
