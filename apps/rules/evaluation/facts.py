"""Computing the SPEC facts from the canonical entities, in bulk, with set-based SQL.

One query per subject type returns one row per subject with every fact the subject sees (its own, its
project's, its client's, its vendor's). The same query serves one subject (``ids=[x]``), a batch and
the nightly run, so the single and bulk paths cannot disagree. Aggregates are computed only over the
projects and clients in scope.

Each fact's *age* is the age of the least fresh stream feeding it (the last successful sync of that
stream, from ``StreamState``): a record unchanged upstream is as fresh as the last sync that saw it. A stream
feeds the entity it loads, whatever it is called: a ``rest`` stream named ``jobs`` that loads projects ages
``project.*`` facts as Procore's ``projects`` does, and a CSV upload (``csv:<entity>``) its entity.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Self

import psycopg
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.utils import timezone

from apps.audit.services import CheckedJSON, RawJSON, is_secret_key

# Which entity a stream loads is the connector kinds' knowledge (ENTITY_STREAMS re-exported for callers).
from apps.connectors.kinds import ENTITY_STREAMS, stream_entity
from apps.rules.engine.catalogue import CUSTOM_GENERATION, CUSTOM_PREFIX, FACTS, LOW_CONFIDENCE, facts_for

# Which canonical entities each fact is computed from (for its age).
FACT_INPUTS: dict[str, tuple[str, ...]] = {
    "change_order.amount": ("change_order",),
    "change_order.amount_pct_of_contract": ("change_order", "project"),
    "change_order.status": ("change_order",),
    "change_order.age_days": ("change_order",),
    "project.contract_value": ("project",),
    "project.income_to_date": ("financial_line",),
    "project.cost_to_date": ("financial_line",),
    "project.margin_pct": ("financial_line",),
    "project.change_orders_30d": ("change_order",),
    "project.change_order_amount_30d": ("change_order",),
    "project.milestones_missed": ("milestone",),
    "project.days_behind_schedule": ("milestone",),
    "project.schedule_status": ("project",),
    "project.data_quality_errors": (),
    "client.days_to_renewal": ("client",),
    "client.missed_last_milestone": ("milestone", "project"),
    "client.ar_overdue_amount": ("financial_line",),
    "client.open_escalations": (),
    "submittal.revision": ("submittal",),
    "submittal.days_overdue": ("submittal",),
    "submittal.schedule_critical": ("submittal",),
    "vendor.late_submittal_rate": ("submittal",),
    # What an AI tool said of a document is a statement made when it analysed it, and most arrive pushed
    # (a webhook refreshes no stream's last sync): a document's own fields do not age with a stream, the
    # records it is compared with do.
    "change_order.document_amount_delta_pct": ("change_order",),
    "project.documents_low_confidence_30d": (),
    "document.label": (),
    "document.confidence": (),
    "document.amount": (),
    "document.linked": ("project",),
    "document.amount_delta_pct": ("change_order", "financial_line"),
}

_PROJECT_FACTS = """
project_facts AS (
    SELECT p.id AS project_id, p.client_id,
        p.contract_value AS "project.contract_value",
        money.income AS "project.income_to_date",
        COALESCE(money.cost, 0) AS "project.cost_to_date",
        ROUND((money.income - COALESCE(money.cost, 0)) / NULLIF(money.income, 0) * 100, 4)
            AS "project.margin_pct",
        COALESCE(co30.n, 0) AS "project.change_orders_30d",
        COALESCE(co30.total, 0) AS "project.change_order_amount_30d",
        COALESCE(ms.missed, 0) AS "project.milestones_missed",
        COALESCE(ms.behind, 0) AS "project.days_behind_schedule",
        NULLIF(p.schedule_status, '') AS "project.schedule_status",
        COALESCE(dq.n, 0) AS "project.data_quality_errors",
        COALESCE(dlc.n, 0) AS "project.documents_low_confidence_30d"
    FROM entities_project p
    LEFT JOIN (
        SELECT project_id,
            SUM(amount) FILTER (WHERE kind = 'invoice') AS income,
            SUM(amount) FILTER (WHERE kind IN ('bill', 'purchase')) AS cost
        FROM entities_financialline
        WHERE deleted_at IS NULL AND project_id IN (SELECT project_id FROM scope_projects)
        GROUP BY project_id
    ) money ON money.project_id = p.id
    LEFT JOIN (
        SELECT project_id, COUNT(*) AS n, SUM(amount) AS total
        FROM entities_changeorder
        WHERE deleted_at IS NULL AND created_upstream_at >= %(since_30d)s
          AND project_id IN (SELECT project_id FROM scope_projects)
        GROUP BY project_id
    ) co30 ON co30.project_id = p.id
    LEFT JOIN (
        SELECT project_id,
            COUNT(*) FILTER (WHERE completed_date IS NULL OR completed_date > due_date) AS missed,
            MAX(GREATEST(COALESCE(completed_date, %(today)s) - due_date, 0)) AS behind
        FROM entities_milestone
        WHERE deleted_at IS NULL AND due_date < %(today)s
          AND project_id IN (SELECT project_id FROM scope_projects)
        GROUP BY project_id
    ) ms ON ms.project_id = p.id
    LEFT JOIN (
        -- Open error findings on the project itself or on one of its records.
        SELECT COALESCE(co.project_id, m.project_id, s.project_id, f.subject_id) AS project_id, COUNT(*) AS n
        FROM quality_finding f
        LEFT JOIN entities_changeorder co ON f.subject_type = 'change_order' AND co.id = f.subject_id
        LEFT JOIN entities_milestone m ON f.subject_type = 'milestone' AND m.id = f.subject_id
        LEFT JOIN entities_submittal s ON f.subject_type = 'submittal' AND s.id = f.subject_id
        WHERE f.resolved_at IS NULL AND f.severity = 'error'
          AND f.subject_type IN ('project', 'change_order', 'milestone', 'submittal')
          AND COALESCE(co.project_id, m.project_id, s.project_id, f.subject_id)
              IN (SELECT project_id FROM scope_projects)
        GROUP BY 1
    ) dq ON dq.project_id = p.id
    LEFT JOIN (
        SELECT project_id, COUNT(*) AS n FROM entities_document
        WHERE deleted_at IS NULL AND confidence < LOW_CONFIDENCE
          AND COALESCE(analyzed_at, source_updated_at) >= %(since_30d)s
          AND project_id IN (SELECT project_id FROM scope_projects)
        GROUP BY project_id
    ) dlc ON dlc.project_id = p.id
    WHERE p.id IN (SELECT project_id FROM scope_projects)
)""".replace("LOW_CONFIDENCE", LOW_CONFIDENCE)

_CLIENT_FACTS = """
client_facts AS (
    SELECT c.id AS client_id,
        c.renewal_date - %(today)s AS "client.days_to_renewal",
        last_ms.missed AS "client.missed_last_milestone",
        COALESCE(ar.overdue, 0) AS "client.ar_overdue_amount",
        COALESCE(esc.n, 0) AS "client.open_escalations"
    FROM entities_client c
    LEFT JOIN (
        -- The most recently due milestone(s) across the client's projects; ties: any missed counts.
        SELECT client_id, bool_or(missed) AS missed FROM (
            SELECT p.client_id,
                (m.completed_date IS NULL OR m.completed_date > m.due_date) AS missed,
                RANK() OVER (PARTITION BY p.client_id ORDER BY m.due_date DESC) AS recency
            FROM entities_milestone m JOIN entities_project p ON p.id = m.project_id
            WHERE m.deleted_at IS NULL AND p.deleted_at IS NULL AND m.due_date < %(today)s
              AND p.client_id IN (SELECT client_id FROM scope_clients)
        ) ranked WHERE recency = 1 GROUP BY client_id
    ) last_ms ON last_ms.client_id = c.id
    LEFT JOIN (
        SELECT p.client_id, SUM(f.balance) AS overdue
        FROM entities_financialline f JOIN entities_project p ON p.id = f.project_id
        WHERE f.deleted_at IS NULL AND f.kind = 'invoice' AND f.balance > 0 AND f.due_date < %(today)s
          AND p.client_id IN (SELECT client_id FROM scope_clients)
        GROUP BY p.client_id
    ) ar ON ar.client_id = c.id
    LEFT JOIN (
        SELECT client_id, COUNT(*) AS n FROM escalations_escalation
        WHERE status IN ('open', 'acknowledged') AND client_id IN (SELECT client_id FROM scope_clients)
        GROUP BY client_id
    ) esc ON esc.client_id = c.id
    WHERE c.id IN (SELECT client_id FROM scope_clients)
)"""

_VENDOR_FACTS = """
vendor_facts AS (
    SELECT vendor_id,
        ROUND(100.0 * COUNT(*) FILTER (WHERE returned_date IS NULL OR returned_date > due_date) / COUNT(*), 4)
            AS "vendor.late_submittal_rate"
    FROM entities_submittal
    WHERE deleted_at IS NULL AND due_date >= %(since_365d)s AND due_date < %(today)s
      AND vendor_id IN (SELECT vendor_id FROM scope)
    GROUP BY vendor_id
)"""

_CO_FACTS = """
    co.amount AS "change_order.amount",
    ROUND(co.amount / NULLIF(pf."project.contract_value", 0) * 100, 4)
        AS "change_order.amount_pct_of_contract",
    co.status AS "change_order.status",
    %(today)s - (co.created_upstream_at AT TIME ZONE %(tz)s)::date AS "change_order.age_days",
    docd.delta AS "change_order.document_amount_delta_pct"
"""

# How far an extracted amount is from the system of record's, in percent of the latter (absolute).
_DELTA = "ROUND(ABS({doc} - {record}) / NULLIF(ABS({record}), 0) * 100, 4)"

_CO_DOCUMENTS = f"""
    LEFT JOIN (
        SELECT d.change_order_id, MAX({_DELTA.format(doc="d.amount", record="c.amount")}) AS delta
        FROM entities_document d JOIN entities_changeorder c ON c.id = d.change_order_id
        WHERE d.deleted_at IS NULL AND d.amount IS NOT NULL AND d.change_order_id IN (SELECT id FROM scope)
        GROUP BY d.change_order_id
    ) docd ON docd.change_order_id = co.id"""

_DOCUMENT_FACTS = f"""
    NULLIF(d.label, '') AS "document.label",
    ROUND(d.confidence::numeric, 4) AS "document.confidence",
    d.amount AS "document.amount",
    (d.project_id IS NOT NULL OR d.client_id IS NOT NULL OR d.vendor_id IS NOT NULL
     OR d.change_order_id IS NOT NULL OR d.invoice_id IS NOT NULL) AS "document.linked",
    {_DELTA.format(doc="d.amount", record="COALESCE(dco.amount, dinv.amount)")} AS "document.amount_delta_pct"
"""

_SUBMITTAL_FACTS = """
    s.revision AS "submittal.revision",
    CASE WHEN s.returned_date IS NULL AND s.due_date < %(today)s THEN %(today)s - s.due_date
         WHEN s.due_date IS NULL AND s.returned_date IS NULL THEN NULL ELSE 0 END AS "submittal.days_overdue",
    s.schedule_critical AS "submittal.schedule_critical"
"""


def _project_cols() -> str:
    return ", ".join(f'pf."{f.name}"' for f in FACTS.values() if f.subject == "project")


def _client_cols(alias: str = "cf") -> str:
    return ", ".join(f'{alias}."{f.name}"' for f in FACTS.values() if f.subject == "client")


def _query(subject_type: str, filtered: bool, *, custom: bool = True) -> str:
    """The facts query of ``subject_type`` (``custom``: with a column per operator-defined fact)."""
    base = _builtin_query(subject_type, filtered)
    if not custom:
        return base + "\nORDER BY subject_id"
    from apps.rules.evaluation.custom import wrap_query

    return wrap_query(base, subject_type, filtered, ordered=True)


# An aggregate's restriction to the subjects' projects or clients (``AND <key> IN (SELECT … FROM scope…)``):
# what keeps a few subjects from paying for every project's aggregates. Over every subject it restricts
# nothing (each aggregate is joined to its project or client by key), so the unfiltered query leaves it out
# and PostgreSQL aggregates the tables straight, without the semi-joins against the scope.
_SCOPED = re.compile(
    r"\s+AND\s+(?:[\w.]+|COALESCE\([^()]*\))\s+IN\s+\(SELECT \w+ FROM scope(?:_projects|_clients)?\)"
)


def _builtin_query(subject_type: str, filtered: bool) -> str:
    return _scoped_query(subject_type, True) if filtered else _everything_query(subject_type)


# The project and client aggregates' restriction to the scope's projects and clients, as a whole.
_PROJECTS_IN_SCOPE = "WHERE p.id IN (SELECT project_id FROM scope_projects)"
_CLIENTS_IN_SCOPE = "WHERE c.id IN (SELECT client_id FROM scope_clients)"


def _everything_query(subject_type: str) -> str:
    """The facts query over every live subject: no scope at all. The subjects are the live rows of their
    table, and each project's and client's facts are joined to them by key, so restricting the project
    and client facts (or their aggregates) to the subjects' projects and clients restricts nothing; left
    out, PostgreSQL also drops the joins of the facts a rule query does not read (the scope's CTEs, read
    several times, were materialised: 100k rows, and every aggregate computed whether read or not)."""
    projects = _SCOPED.sub("", _PROJECT_FACTS)
    clients = _SCOPED.sub("", _CLIENT_FACTS)
    project_facts = projects.replace(_PROJECTS_IN_SCOPE, "")
    client_facts = clients.replace(_CLIENTS_IN_SCOPE, "")
    documents = _SCOPED.sub("", _CO_DOCUMENTS)
    if subject_type == "change_order":
        ctes = [project_facts, client_facts]
        select = f"""SELECT co.id AS subject_id, {_CO_FACTS}, {_project_cols()}, {_client_cols()}
            FROM entities_changeorder co{documents}
            LEFT JOIN project_facts pf ON pf.project_id = co.project_id
            LEFT JOIN client_facts cf ON cf.client_id = pf.client_id
            WHERE co.deleted_at IS NULL"""
    elif subject_type == "project":
        ctes = [projects.replace(_PROJECTS_IN_SCOPE, "WHERE p.deleted_at IS NULL"), client_facts]
        select = f"""SELECT pf.project_id AS subject_id, {_project_cols()}, {_client_cols()}
            FROM project_facts pf LEFT JOIN client_facts cf ON cf.client_id = pf.client_id"""
    elif subject_type == "client":
        ctes = [clients.replace(_CLIENTS_IN_SCOPE, "WHERE c.deleted_at IS NULL")]
        select = f"SELECT cf.client_id AS subject_id, {_client_cols()} FROM client_facts cf"
    elif subject_type == "submittal":
        ctes = [project_facts, client_facts, _SCOPED.sub("", _VENDOR_FACTS)]
        select = f"""SELECT s.id AS subject_id, {_SUBMITTAL_FACTS}, {_project_cols()}, {_client_cols()},
                vf."vendor.late_submittal_rate"
            FROM entities_submittal s
            LEFT JOIN project_facts pf ON pf.project_id = s.project_id
            LEFT JOIN client_facts cf ON cf.client_id = pf.client_id
            LEFT JOIN vendor_facts vf ON vf.vendor_id = s.vendor_id
            WHERE s.deleted_at IS NULL"""
    elif subject_type == "document":
        ctes = [project_facts, client_facts]
        select = f"""SELECT d.id AS subject_id, {_DOCUMENT_FACTS}, {_project_cols()}, {_client_cols()}
            FROM entities_document d
            LEFT JOIN entities_changeorder dco ON dco.id = d.change_order_id AND dco.deleted_at IS NULL
            LEFT JOIN entities_financialline dinv ON dinv.id = d.invoice_id AND dinv.deleted_at IS NULL
            LEFT JOIN project_facts pf ON pf.project_id = d.project_id
            LEFT JOIN client_facts cf ON cf.client_id = COALESCE(pf.client_id, d.client_id)
            WHERE d.deleted_at IS NULL"""
    else:
        raise ValueError(f"unknown subject type {subject_type!r}")
    query = "WITH " + ",\n".join(ctes) + "\n" + select
    assert "scope" not in query, "a scope left in the query over every subject"
    return query


def _scoped_query(subject_type: str, filtered: bool) -> str:
    where = "AND t.id = ANY(%(ids)s::bigint[])" if filtered else ""
    if subject_type == "change_order":
        scope = f"""scope AS (SELECT t.id, t.project_id FROM entities_changeorder t
                    WHERE t.deleted_at IS NULL {where}),
            scope_projects AS (SELECT DISTINCT project_id FROM scope),
            scope_clients AS (SELECT DISTINCT client_id FROM entities_project
                              WHERE id IN (SELECT project_id FROM scope_projects))"""
        ctes = [scope, _PROJECT_FACTS, _CLIENT_FACTS]
        select = f"""SELECT co.id AS subject_id, {_CO_FACTS}, {_project_cols()}, {_client_cols()}
            FROM entities_changeorder co JOIN scope ON scope.id = co.id{_CO_DOCUMENTS}
            LEFT JOIN project_facts pf ON pf.project_id = co.project_id
            LEFT JOIN client_facts cf ON cf.client_id = pf.client_id"""
    elif subject_type == "project":
        scope = f"""scope_projects AS (SELECT t.id AS project_id FROM entities_project t
                    WHERE t.deleted_at IS NULL {where}),
            scope_clients AS (SELECT DISTINCT client_id FROM entities_project
                              WHERE id IN (SELECT project_id FROM scope_projects))"""
        ctes = [scope, _PROJECT_FACTS, _CLIENT_FACTS]
        select = f"""SELECT pf.project_id AS subject_id, {_project_cols()}, {_client_cols()}
            FROM project_facts pf LEFT JOIN client_facts cf ON cf.client_id = pf.client_id"""
    elif subject_type == "client":
        scope = f"""scope_clients AS (SELECT t.id AS client_id FROM entities_client t
                    WHERE t.deleted_at IS NULL {where})"""
        ctes = [scope, _CLIENT_FACTS]
        select = f"SELECT cf.client_id AS subject_id, {_client_cols()} FROM client_facts cf"
    elif subject_type == "submittal":
        scope = f"""scope AS (SELECT t.id, t.project_id, t.vendor_id FROM entities_submittal t
                    WHERE t.deleted_at IS NULL {where}),
            scope_projects AS (SELECT DISTINCT project_id FROM scope),
            scope_clients AS (SELECT DISTINCT client_id FROM entities_project
                              WHERE id IN (SELECT project_id FROM scope_projects))"""
        ctes = [scope, _PROJECT_FACTS, _CLIENT_FACTS, _VENDOR_FACTS]
        select = f"""SELECT s.id AS subject_id, {_SUBMITTAL_FACTS}, {_project_cols()}, {_client_cols()},
                vf."vendor.late_submittal_rate"
            FROM entities_submittal s JOIN scope ON scope.id = s.id
            LEFT JOIN project_facts pf ON pf.project_id = s.project_id
            LEFT JOIN client_facts cf ON cf.client_id = pf.client_id
            LEFT JOIN vendor_facts vf ON vf.vendor_id = s.vendor_id"""
    elif subject_type == "document":
        scope = f"""scope AS (SELECT t.id, t.project_id, t.client_id FROM entities_document t
                    WHERE t.deleted_at IS NULL {where}),
            scope_projects AS (SELECT DISTINCT project_id FROM scope WHERE project_id IS NOT NULL),
            scope_clients AS (SELECT DISTINCT COALESCE(p.client_id, s.client_id) AS client_id
                              FROM scope s LEFT JOIN entities_project p ON p.id = s.project_id)"""
        ctes = [scope, _PROJECT_FACTS, _CLIENT_FACTS]
        select = f"""SELECT d.id AS subject_id, {_DOCUMENT_FACTS}, {_project_cols()}, {_client_cols()}
            FROM entities_document d JOIN scope ON scope.id = d.id
            LEFT JOIN entities_changeorder dco ON dco.id = d.change_order_id AND dco.deleted_at IS NULL
            LEFT JOIN entities_financialline dinv ON dinv.id = d.invoice_id AND dinv.deleted_at IS NULL
            LEFT JOIN project_facts pf ON pf.project_id = d.project_id
            LEFT JOIN client_facts cf ON cf.client_id = COALESCE(pf.client_id, d.client_id)"""
    else:
        raise ValueError(f"unknown subject type {subject_type!r}")
    return "WITH " + ",\n".join(ctes) + "\n" + select


@dataclass(frozen=True)
class Context:
    """One subject's facts, their ages in seconds (None: never synced) and where they came from."""

    subject_type: str
    subject_id: int
    values: dict[str, Any]
    ages: dict[str, float | None]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """JSON-safe facts with age, source, unit and type, for decision records and evidence."""
        out = {}
        ages = self.ages
        for name, value in self.values.items():
            described = _DESCRIBED.get(name)
            if described is None:
                fact = FACTS[name]
                described = (fact.source, fact.unit, str(fact.type.value))
                if not fact.applies_to:  # a custom fact's definition can change: never cached
                    _DESCRIBED[name] = described
            if isinstance(value, Decimal | dt.date):
                value = str(value)
            source, unit, kind = described
            out[name] = {
                "value": value,
                "age_s": ages.get(name),
                "source": source,
                "unit": unit,
                "type": kind,
            }
            if name.startswith(CUSTOM_PREFIX):
                fact = FACTS[name]
                out[name]["version"] = fact.version
                out[name]["definition"] = fact.description
        return out

    def snapshot_json(self) -> RawJSON:
        """``snapshot()`` as canonical JSON text (``apps.audit.models.canonical_json``'s: keys sorted, no
        whitespace, ASCII), for decision rows and, as is, for their audit entries, which hash that form.

        Only the values differ between the subjects of a run: each fact's age, source, unit and type
        are rendered once into fragments around its value (a first run stores 100k snapshots).

        A ``CheckedJSON`` when no fact name holds a secret word (checked once per set of names; the
        other keys are the snapshot's own) and no value brought an object of its own (the text holds
        one brace per fact, and one more, which a value with a brace in it also fails, to no harm): the
        audit writer then need not scan the text for keys to redact.
        """
        names = tuple(self.values)
        key = (names, tuple(self.ages.get(name) for name in names), CUSTOM_GENERATION[0])
        cached = _SNAPSHOT_FRAGMENTS.get(key)
        if cached is None:
            if len(_SNAPSHOT_FRAGMENTS) > 64:
                _SNAPSHOT_FRAGMENTS.clear()
            cached = _SNAPSHOT_FRAGMENTS[key] = (
                tuple(
                    (i, f"{_json_str(names[i])}:{_fact_head(names[i], key[1][i])}", _fact_tail(names[i]))
                    for i in sorted(range(len(names)), key=names.__getitem__)
                ),
                not any(is_secret_key(name) for name in names),
            )
        fragments, clean = cached
        values = tuple(self.values.values())
        text = "{" + ",".join([f"{head}{_json_value(values[i])}{tail}" for i, head, tail in fragments]) + "}"
        if clean and text.count("{") == len(fragments) + 1:
            return CheckedJSON(text)
        return RawJSON(text)


# fact name -> (source, unit, type) as a snapshot shows them.
_DESCRIBED: dict[str, tuple[str, str, str]] = {}
# (fact names, their ages) -> per fact in name order: its position among the values, the JSON before its
# value in a snapshot and the JSON after it; and whether no fact name holds a secret word.
_SNAPSHOT_FRAGMENTS: dict[
    tuple[tuple[str, ...], tuple[float | None, ...], int], tuple[tuple[tuple[int, str, str], ...], bool]
] = {}
_json_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for str (ensure_ascii)


# A fact's keys in a snapshot, in canonical (sorted) order: age_s, definition (custom facts), source,
# type, unit, value, version (custom facts).
def _fact_head(name: str, age: float | None) -> str:
    fact = FACTS[name]
    definition = ""
    if name.startswith(CUSTOM_PREFIX):
        definition = f'"definition":{_json_str(fact.description)},'
    return (
        f'{{"age_s":{json.dumps(age)},{definition}"source":{_json_str(fact.source)},'
        f'"type":{_json_str(str(fact.type.value))},"unit":{_json_str(fact.unit)},"value":'
    )


def _fact_tail(name: str) -> str:
    if name.startswith(CUSTOM_PREFIX):
        return f',"version":{int.__repr__(FACTS[name].version)}}}'
    return "}"


def _json_value(value: Any) -> str:
    """One snapshot value as JSON, as ``snapshot()`` then ``canonical_json`` would write it."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _json_str(value)
    if isinstance(value, Decimal | dt.date):
        # str() of a Decimal, date or datetime holds no character JSON escapes.
        return f'"{value}"'
    return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":"))


def evaluation_date(now: dt.datetime | None = None) -> dt.date:
    """'Today' is the evaluation date in TIME_ZONE (SPEC)."""
    return timezone.localtime(now or timezone.now()).date()


def fact_ages(now: dt.datetime) -> dict[str, float | None]:
    """Age in seconds of every fact's inputs: the oldest last successful sync among the streams that
    load each input entity, in any connection, whatever the streams are called."""
    synced: dict[str, list[dt.datetime | None]] = defaultdict(list)  # per entity, one per stream state
    for entity, last_success_at in _stream_states():
        if entity is not None:
            synced[entity].append(last_success_at)

    def oldest_age(times: list[dt.datetime | None]) -> float | None:
        # Never synced anywhere (no state, or a state without success): the age is unknown.
        known = [t for t in times if t is not None]
        if not times or len(known) < len(times):
            return None
        return max(0.0, (now - min(known)).total_seconds())

    entity_age = {entity: oldest_age(synced.get(entity, [])) for entity in ENTITY_STREAMS}
    ages: dict[str, float | None] = {}
    from apps.rules.engine import customfacts
    from apps.rules.evaluation.custom import installed

    defs = installed()
    every = {**FACT_INPUTS, **{n: customfacts.inputs(d, defs, FACT_INPUTS) for n, d in defs.items()}}
    for fact, inputs in every.items():
        input_ages = [entity_age.get(e) for e in inputs]
        ages[fact] = (
            0.0 if not inputs else None if None in input_ages else max(a for a in input_ages if a is not None)
        )
    return ages


# (connection id, slug, kind, options as text, stream) -> the entity the stream loads (None: none); what
# ``stream_entity`` answers depends on nothing else, so a stream's answer is asked of its kind once.
_STREAM_ENTITY: dict[tuple[int, str, str, str, str], str | None] = {}


def _stream_states() -> list[tuple[str | None, dt.datetime | None]]:
    """Per stream state: the entity its stream loads and its last successful sync. One plain query (an
    event's facts ask for the ages each time); a connection is built as a model, from its row, only for a
    stream not seen before (or whose connection's kind, slug or options changed)."""
    from apps.connectors.models import Connection, StreamState

    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT c.id, c.slug, c.kind, c.options::text, s.stream, s.last_success_at
                FROM {StreamState._meta.db_table} s
                JOIN {Connection._meta.db_table} c ON c.id = s.connection_id"""
        )
        rows = cursor.fetchall()
    if any(row[:5] not in _STREAM_ENTITY for row in rows):
        if len(_STREAM_ENTITY) > 4096:
            _STREAM_ENTITY.clear()
        options = Connection._meta.get_field("options")
        connections: dict[int, Connection] = {}
        kinds: dict[int, Any] = {}
        for row in rows:
            if row[:5] in _STREAM_ENTITY:
                continue
            if row[0] not in connections:
                # As a query with .only("slug", "kind", "options") loads it (the rest deferred), from
                # this row: no second query.
                connections[row[0]] = Connection.from_db(
                    connection.alias,
                    ["id", "slug", "kind", "options"],
                    [row[0], row[1], row[2], json.loads(row[3], cls=options.decoder)],
                )
            _STREAM_ENTITY[row[:5]] = stream_entity(connections[row[0]], row[4], kinds)
    return [(_STREAM_ENTITY[row[:5]], row[5]) for row in rows]


# Up to this many subjects (an event's few), the facts query runs as a server-side prepared statement on
# its generic plan: planning its CTEs over 13 relations took 4.9 ms a call, executing it 1.8 ms (one change
# order, 100k in the table); the generic plan is planned once per connection and executes in the same time
# or less (the subjects are few whatever their number, so one plan suits them all).
PREPARED_LIMIT = 200
# A prepare_threshold that no statement reaches: only those executed with prepare=True are prepared.
_NEVER_AUTOMATICALLY = 2**31 - 1


class _PreparedCursor(psycopg.Cursor[Any]):
    """A server-binding psycopg cursor whose every statement is prepared (psycopg keeps the statement
    per connection, keyed by its text and parameter types)."""

    logged = False  # Django logs the statements (DEBUG, or a test capturing them)

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        super().execute(query, params, prepare=True, binary=binary)
        if self.logged and self._query is None:
            # Executing a statement already prepared sends no text, so psycopg keeps none; Django logs
            # the query it reads there (last_executed_query), so put the statement's text there.
            self._query = self._convert_query(query, params)
        return self


def _execute_generic(query: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``query`` as a prepared statement on its generic plan: (column names but the first, rows).

    ``plan_cache_mode`` is set around the one statement and reset after it (a failed statement inside a
    transaction rolls the SET back with it); the SET and RESET go to the raw connection, so they are not
    counted or logged as the product's queries, while the facts query itself goes through Django's
    cursor wrapper (logged, counted, execute wrappers applied) as every other query.
    """
    connection.ensure_connection()
    raw = connection.connection
    # Django opens connections with prepared statements off (prepare_threshold None, which also ignores
    # prepare=True); its own cursors bind client-side and never prepare, so turning it on for this
    # statement changes nothing else; the statements psycopg prepared stay, per connection, for the next.
    threshold = raw.prepare_threshold
    raw.prepare_threshold = _NEVER_AUTOMATICALLY
    raw.execute("SET plan_cache_mode = force_generic_plan")
    try:
        # _prepare_cursor: Django's own wrapping of a new cursor (thread check, debug logging, wrappers).
        prepared = _PreparedCursor(raw)
        prepared.logged = connection.queries_logged
        with connection._prepare_cursor(prepared) as cursor:  # type: ignore[attr-defined]
            cursor.execute(query, params)
            columns = [c.name for c in cursor.description][1:]
            return columns, cursor.fetchall()
    finally:
        raw.prepare_threshold = threshold
        if raw.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            raw.execute("RESET plan_cache_mode")


# Up to this many subjects, operator-defined facts are computed in Python from the subjects' rows (the
# per-event path); from it on, as columns of the facts query (the batch path). Both give the same values.
PYTHON_CUSTOM_LIMIT = 200


def compute_contexts(
    subject_type: str,
    ids: Sequence[int] | None = None,
    *,
    now: dt.datetime | None = None,
    refresh_custom: bool = False,
    custom_in_python: bool | None = None,
) -> Iterator[Context]:
    """Yield the context of every live subject of ``subject_type`` (or only ``ids``), in id order.

    Operator-defined facts are computed in Python for a few ``ids`` (an event), in SQL otherwise
    (``custom_in_python`` forces either); ``refresh_custom``: install their current versions first (an
    evaluation does so once at its start; pages that show facts take what the process has installed, and
    so add no query)."""
    from apps.rules.evaluation.custom import params as custom_params
    from apps.rules.evaluation.custom import python_values, refresh

    now = now or timezone.now()
    if refresh_custom:
        refresh()
    today = evaluation_date(now)
    params = {
        "today": today,
        "since_30d": now - dt.timedelta(days=30),
        "since_365d": today - dt.timedelta(days=365),
        "tz": settings.TIME_ZONE,
        "ids": list(ids) if ids is not None else None,
    }
    if custom_in_python is None:
        custom_in_python = ids is not None and len(ids) < PYTHON_CUSTOM_LIMIT
    if not custom_in_python:
        params.update(custom_params(now))
    visible = {f.name for f in facts_for(subject_type)}
    ages = {k: v for k, v in fact_ages(now).items() if k in visible}
    query = _query(subject_type, ids is not None, custom=not custom_in_python)
    if custom_in_python and ids is not None and len(ids) <= PREPARED_LIMIT:
        columns, fetched = _execute_generic(query, params)
        base = {row[0]: dict(zip(columns, row[1:], strict=True)) for row in fetched}
    else:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            columns = [c.name for c in cursor.description][1:]
            if not custom_in_python:
                while rows := cursor.fetchmany(2000):
                    for row in rows:
                        yield Context(subject_type, row[0], dict(zip(columns, row[1:], strict=True)), ages)
                return
            base = {row[0]: dict(zip(columns, row[1:], strict=True)) for row in cursor.fetchall()}
    extra = python_values(subject_type, list(base), base, now=now)
    for subject_id, values in base.items():
        yield Context(subject_type, subject_id, {**values, **extra[subject_id]}, ages)
