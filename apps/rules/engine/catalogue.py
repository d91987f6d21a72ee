"""The typed catalogue of facts that rules can test (SPEC "Subjects and facts").

Operators never type code: they pick a fact from this catalogue and an operator valid for its type
(ANCHORS, Rules 1). Adding a fact is one entry in ``_CATALOGUE``; the SQL that computes it lives in
``facts.py``. Pure Python: no Django here, so the evaluator and its tests run without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


def words_of(name: str) -> str:
    """A name in words, where nobody wrote a label: ``margin_pct`` → ``Margin pct``."""
    return name.replace("_", " ").capitalize()


class FactType(StrEnum):
    MONEY = "money"
    PERCENT = "percent"
    INT = "int"
    TEXT = "text"
    BOOL = "bool"
    DATE = "date"
    # A unitless number between 0 and 1: an AI tool's confidence (SPEC "AI tools as sources").
    SCORE = "score"


SUBJECT_TYPES: tuple[str, ...] = ("change_order", "project", "client", "submittal", "document")

# Which fact prefixes a subject's context holds: its own and those of the entities it belongs to.
VISIBLE: dict[str, tuple[str, ...]] = {
    "change_order": ("change_order", "project", "client"),
    "project": ("project", "client"),
    "client": ("client",),
    "submittal": ("submittal", "project", "client", "vendor"),
    # A document processed by an AI tool sees the project (and client) it is linked to.
    "document": ("document", "project", "client"),
}

SOURCES: tuple[str, ...] = ("pm", "accounting", "crm", "fulcrum", "ai")

_ORDERED_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", "is_null")
_OPERATORS_BY_TYPE: dict[FactType, tuple[str, ...]] = {
    FactType.MONEY: _ORDERED_OPS,
    FactType.PERCENT: _ORDERED_OPS,
    FactType.INT: _ORDERED_OPS,
    FactType.SCORE: _ORDERED_OPS,
    FactType.DATE: _ORDERED_OPS,
    FactType.TEXT: ("eq", "ne", "in", "not_in", "contains", "is_null"),
    FactType.BOOL: ("is", "eq", "ne", "is_null"),
}

OPERATORS: tuple[str, ...] = (
    "eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", "is", "is_null", "contains",
)  # fmt: skip

# Shown in admin next to the operator picker.
OPERATOR_LABELS: dict[str, str] = {
    "eq": "equals",
    "ne": "does not equal",
    "gt": "more than",
    "gte": "at least",
    "lt": "less than",
    "lte": "at most",
    "between": "between (inclusive)",
    "in": "is one of",
    "not_in": "is none of",
    "is": "is",
    "is_null": "has no data",
    "contains": "contains (ignoring case)",
}


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact a rule can test: its name (``subject.attribute``), type, unit and origin."""

    name: str
    type: FactType
    unit: str
    description: str
    source: str
    choices: tuple[str, ...] = ()
    # How people read it: a label ("Margin"), the unit in words (singular, plural: "day", "days"), and for
    # true/false facts what each value says ("missed its last milestone").
    label: str = ""
    unit_words: tuple[str, str] = ("", "")
    says: tuple[str, str] = ("", "")
    # A text fact's choices in words, in the order of ``choices`` ("at_risk" → "At risk"; derived when
    # left empty). The raw value stays in the evaluator's trace, the fact-key details and the API.
    choice_words: tuple[str, ...] = ()
    # For a count with a unit word, what it counts in a sentence (singular, plural): "2 missed
    # milestones (more than 0)" rather than "Missed milestones 2 milestones is above 0 milestones".
    counted: tuple[str, str] = ("", "")
    # The meaning for people who read emails, where ``description`` is a formula (admin shows that).
    plain: str = ""
    # An operator-defined fact (``custom.<key>``): the subject types whose rules see it, and the version
    # of its definition (apps/rules/customfacts.py). Empty for the built-in facts.
    applies_to: tuple[str, ...] = ()
    version: int = 0
    subject: str = field(init=False)

    def __post_init__(self) -> None:
        subject, dot, attribute = self.name.partition(".")
        if not dot or not subject or not attribute:
            raise ValueError(f"fact name {self.name!r} must be 'subject.attribute'")
        if self.source not in SOURCES:
            raise ValueError(f"fact {self.name}: unknown source {self.source!r}")
        if self.choices and self.type is not FactType.TEXT:
            raise ValueError(f"fact {self.name}: only text facts have choices")
        object.__setattr__(self, "subject", subject)
        if not self.choice_words:
            said = tuple(words_of(choice) for choice in self.choices)
            object.__setattr__(self, "choice_words", said)
        if len(self.choice_words) != len(self.choices):
            raise ValueError(f"fact {self.name}: one word for each choice")
        if any(self.counted) and (self.type is not FactType.INT or not all(self.counted)):
            raise ValueError(f"fact {self.name}: only whole-number facts are counted, singular and plural")
        if not self.label:
            object.__setattr__(self, "label", words_of(attribute))
        if not self.plain:
            object.__setattr__(self, "plain", self.description)
        if self.unit_words == ("", ""):
            words = {"USD": ("US dollar", "US dollars"), "%": ("percent", "percent")}.get(self.unit)
            if words:
                object.__setattr__(self, "unit_words", words)

    def unit_for(self, count: object) -> str:
        """The unit in words for a count of it: ``1 day``, ``2 days``; empty when it has none."""
        one, many = self.unit_words
        try:
            single: bool = abs(count) == 1  # type: ignore[arg-type]
        except TypeError:
            single = False
        return one if single else many

    @property
    def operators(self) -> tuple[str, ...]:
        return operators_for(self.type)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe description for admin pickers and the API."""
        return {
            "name": self.name,
            "type": self.type.value,
            "unit": self.unit,
            "label": self.label,
            "unit_words": list(self.unit_words),
            "plain": self.plain,
            "description": self.description,
            "source": self.source,
            "subject": self.subject,
            "choices": list(self.choices),
            "choice_words": list(self.choice_words),
            "operators": list(self.operators),
        }


_M, _P, _I, _T, _B = FactType.MONEY, FactType.PERCENT, FactType.INT, FactType.TEXT, FactType.BOOL
_S = FactType.SCORE
# Below this an AI tool's classification is "low confidence" (project.documents_low_confidence_30d).
LOW_CONFIDENCE = "0.8"

_DAYS = ("day", "days")

# name, type, unit, description, source[, choices], label, unit in words (singular, plural)
# fmt: off
_CATALOGUE: tuple[Fact, ...] = (
    Fact(
        "change_order.amount", _M, "USD", "the change order's total", "pm",
        label="Change order amount",
    ),
    Fact(
        "change_order.amount_pct_of_contract", _P, "%", "amount / project.contract_value × 100", "pm",
        label="Change order share of contract",
        plain="the change order's amount as a share of the project's contract value",
    ),
    Fact(
        "change_order.status", _T, "",
        "as in the PM system, normalised to draft / pending / approved / rejected / void", "pm",
        choices=("draft", "pending", "approved", "rejected", "void"), label="Change order status",
    ),
    Fact(
        "change_order.age_days", _I, "days", "days since it was created", "pm",
        label="Change order age", unit_words=_DAYS,
    ),
    Fact(
        "project.contract_value", _M, "USD", "the project's contract value from the PM system", "pm",
        label="Contract value",
    ),
    Fact(
        "project.income_to_date", _M, "USD",
        "sum of invoice totals for the project's job in accounting", "accounting", label="Income to date",
    ),
    Fact(
        "project.cost_to_date", _M, "USD",
        "sum of bill and purchase lines charged to the project's job", "accounting", label="Cost to date",
    ),
    Fact(
        "project.margin_pct", _P, "%",
        "(income_to_date − cost_to_date) / income_to_date × 100; null when income is 0", "accounting",
        label="Margin",
        plain="income minus costs, as a share of income, from the accounting system",
    ),
    Fact(
        "project.change_orders_30d", _I, "count",
        "change orders on the project created in the last 30 days", "pm",
        label="Change orders in the last 30 days", unit_words=("change order", "change orders"),
        counted=("change order in the last 30 days", "change orders in the last 30 days"),
    ),
    Fact(
        "project.change_order_amount_30d", _M, "USD",
        "total of the project's change orders of the last 30 days", "pm",
        label="Change order total in the last 30 days",
    ),
    Fact(
        "project.milestones_missed", _I, "count",
        "milestones due before today and not completed by their due date", "pm",
        label="Missed milestones", unit_words=("milestone", "milestones"),
        counted=("missed milestone", "missed milestones"),
    ),
    Fact(
        "project.days_behind_schedule", _I, "days",
        "max over past-due milestones of (completed date or today) − due date; 0 if none", "pm",
        label="Days behind schedule", unit_words=_DAYS,
        counted=("day behind schedule", "days behind schedule"),
        plain="how many days late the project's most overdue milestone is",
    ),
    Fact(
        "project.schedule_status", _T, "", "on_track / at_risk / behind, as the PM system reports it", "pm",
        choices=("on_track", "at_risk", "behind"), label="Schedule status",
    ),
    # Beyond SPEC's table: a data-quality finding a rule can refuse to act on (e.g. `eq 0`).
    Fact(
        "project.data_quality_errors", _I, "count",
        "open data-quality findings of error severity on the project or its change orders, milestones "
        "and submittals (missing fields, orphans, cross-system conflicts)", "fulcrum",
        label="Data-quality errors", unit_words=("error", "errors"),
        counted=("data-quality error", "data-quality errors"),
    ),
    Fact(
        "client.days_to_renewal", _I, "days", "contract renewal date − today; null without one", "crm",
        label="Days to renewal", unit_words=_DAYS,
        counted=("day to renewal", "days to renewal"),
        plain="days until the client's contract renews (from the CRM)",
    ),
    Fact(
        "client.missed_last_milestone", _B, "",
        "the most recently due milestone across the client's projects was missed", "pm",
        label="Missed last milestone",
        says=("the client missed its last milestone", "the client did not miss its last milestone"),
    ),
    Fact(
        "client.ar_overdue_amount", _M, "USD",
        "open invoice balances past due for the client's jobs", "accounting", label="Overdue receivables",
    ),
    Fact(
        "client.open_escalations", _I, "count",
        "escalations on the client's subjects not yet resolved or dismissed", "fulcrum",
        label="Open escalations", unit_words=("escalation", "escalations"),
        counted=("open escalation", "open escalations"),
    ),
    Fact("submittal.revision", _I, "", "revision number", "pm", label="Submittal revision"),
    Fact(
        "submittal.days_overdue", _I, "days", "today − due date when not yet returned; 0 otherwise", "pm",
        label="Days overdue", unit_words=_DAYS,
        counted=("day overdue", "days overdue"),
        plain="days since the submittal was due, while it has not been returned",
    ),
    Fact(
        "submittal.schedule_critical", _B, "",
        "on the critical path / flagged critical in the PM system", "pm",
        label="Schedule critical",
        says=("the submittal is on the critical path", "the submittal is not on the critical path"),
    ),
    Fact(
        "change_order.document_amount_delta_pct", _P, "%",
        "the largest document.amount_delta_pct among the documents linked to the change order; null "
        "without one", "ai",
        label="AI-extracted amount vs change order",
        plain="how far the amount an AI tool read on the change order's documents is from Procore's",
    ),
    Fact(
        "project.documents_low_confidence_30d", _I, "count",
        f"documents linked to the project, analysed in the last 30 days, whose classification confidence "
        f"is below {LOW_CONFIDENCE}", "ai",
        label="Low-confidence documents in the last 30 days", unit_words=("document", "documents"),
        counted=(
            "low-confidence document in the last 30 days", "low-confidence documents in the last 30 days"
        ),
    ),
    Fact(
        "document.label", _T, "", "the AI tool's classification of the document (its docType)", "ai",
        label="Document class",
    ),
    Fact(
        "document.confidence", _S, "", "the AI tool's confidence in its classification, 0–1", "ai",
        label="Classification confidence",
    ),
    Fact(
        "document.amount", _M, "USD", "the amount the AI tool extracted (e.g. InvoiceTotal)", "ai",
        label="AI-extracted amount",
    ),
    Fact(
        "document.linked", _B, "",
        "linked to a project, client, vendor, change order or invoice by entity resolution", "fulcrum",
        label="Linked",
        says=("the document is linked to a record", "the document is not linked to any record"),
    ),
    Fact(
        "document.amount_delta_pct", _P, "%",
        "|document.amount − the linked change order's amount (else the linked invoice's)| / that "
        "amount × 100; null without an extracted amount or a linked record", "ai",
        label="AI-extracted amount vs system of record",
        plain="how far the amount the AI tool read is from the amount in the system of record",
    ),
    Fact(
        "vendor.late_submittal_rate", _P, "%",
        "share of the vendor's submittals in the last 365 days returned after due date", "pm",
        label="Vendor's late submittal rate",
    ),
)
# fmt: on


class FactIndex(dict[str, Fact]):
    """The built-in facts by name; a ``custom.<key>`` name is looked up among the installed
    operator-defined facts (iterating gives the built-in ones only)."""

    def get(self, name: str, default: Any = None) -> Any:
        found = super().get(name)
        if found is None and isinstance(name, str) and name.startswith(CUSTOM_PREFIX):
            found = _custom_lookup(name)
        return default if found is None else found

    def __missing__(self, name: str) -> Fact:
        found = _custom_lookup(name) if isinstance(name, str) else None
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and _custom_lookup(name) is not None)


CUSTOM_PREFIX = "custom."
_CUSTOM: dict[str, Fact] = {}
_CUSTOM_DEFINITIONS: dict[str, Any] = {}
# Bumped on every install, so caches of what a fact looks like can tell definitions apart.
CUSTOM_GENERATION = [0]


_LOADER: list[Any] = []


def set_custom_loader(loader: Any) -> None:
    """What to call when a ``custom.*`` name is not installed (the Django side loads the definitions)."""
    _LOADER[:] = [loader]


def _custom_lookup(name: str) -> Fact | None:
    if not name.startswith(CUSTOM_PREFIX):
        return None
    found = _CUSTOM.get(name)
    if found is None and _LOADER:
        _LOADER[0]()
        found = _CUSTOM.get(name)
    return found


def register_custom_facts(facts: list[Fact], *, definitions: Any = None) -> None:
    """Install the operator-defined facts (replacing the previous ones)."""
    for fact in facts:
        if not fact.name.startswith(CUSTOM_PREFIX) or not fact.applies_to:
            raise ValueError(f"{fact.name}: a custom fact is custom.<key> with its subject types")
    _CUSTOM.clear()
    _CUSTOM.update({fact.name: fact for fact in facts})
    _CUSTOM_DEFINITIONS.clear()
    _CUSTOM_DEFINITIONS.update(definitions or {})
    CUSTOM_GENERATION[0] += 1


def custom_fact(name: str) -> Fact | None:
    return _CUSTOM.get(name)


def custom_definitions() -> dict[str, Any]:
    return _CUSTOM_DEFINITIONS


def builtin_fact(name: str) -> Fact | None:
    return dict.get(FACTS, name)


def _index(facts: tuple[Fact, ...]) -> FactIndex:
    index = FactIndex()
    known_prefixes = {prefix for prefixes in VISIBLE.values() for prefix in prefixes}
    for fact in facts:
        if fact.name in index:
            raise ValueError(f"fact {fact.name} is registered twice")
        if fact.subject not in known_prefixes:
            raise ValueError(f"fact {fact.name}: no subject type sees {fact.subject}.*")
        index[fact.name] = fact
    return index


FACTS: FactIndex = _index(_CATALOGUE)


def operators_for(fact_type: FactType | str) -> tuple[str, ...]:
    """The operators valid for a fact type, in the order admin shows them."""
    return _OPERATORS_BY_TYPE[FactType(fact_type)]


def is_visible(fact_name: str, subject_type: str) -> bool:
    if fact_name.startswith(CUSTOM_PREFIX):
        custom = _CUSTOM.get(fact_name)
        return custom is not None and subject_type in custom.applies_to
    return fact_name.partition(".")[0] in VISIBLE.get(subject_type, ())


def facts_for(subject_type: str) -> list[Fact]:
    """Every fact a rule on ``subject_type`` may test, own facts first, in catalogue order."""
    try:
        prefixes = VISIBLE[subject_type]
    except KeyError:
        raise ValueError(
            f"unknown subject type {subject_type!r}; choose from {', '.join(SUBJECT_TYPES)}"
        ) from None
    builtin = [fact for prefix in prefixes for fact in _CATALOGUE if fact.subject == prefix]
    return builtin + [fact for fact in _CUSTOM.values() if subject_type in fact.applies_to]
