"""The orchestration map (SPEC "The orchestration map"): systems → streams → facts → rules → actions →
outcomes.

``build_map`` reads the whole picture for a window (1 h, 24 h or 7 d) in five queries, whatever the number of
rules and streams: the connections with their streams and sync counts, the published rules, the evaluations
(traced decisions plus the bulk runs' summaries), the outbox, and the escalations' outcomes. The edges come
from configuration, not from guesses: a stream feeds a fact when the entity the stream loads is one of the
fact's inputs; a rule reads the facts of its published version's conditions; a rule takes the actions its
published version names (and any action its escalations were sent through in the window); an action leads
to an outcome when an escalation it was sent for was closed with that label in the window.

The page (``svg.py``, ``views.py``) and ``/api/orchestration/`` render the same :class:`Graph`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.db import connection as db
from django.urls import reverse
from django.utils import timezone

from apps.connectors.kinds import stream_entity
from apps.connectors.models import Connection, StreamState, SyncRun, WebhookDelivery, kind_choices
from apps.dashboard.admin_home import schedule_interval
from apps.escalations.actions import action_words
from apps.escalations.models import Delivery, Escalation
from apps.rules.engine import FACTS, RuleValidationError, compile_condition
from apps.rules.evaluation.facts import FACT_INPUTS
from apps.rules.models import Decision, EvaluationRun, Rule, RuleVersion

WINDOWS: dict[str, dt.timedelta] = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
}
WINDOW_WORDS = {"1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days"}
DEFAULT_WINDOW = "24h"

KINDS = ("system", "stream", "fact", "rule", "action", "outcome")
KIND_TITLES = {
    "system": "Systems",
    "stream": "Streams",
    "fact": "Facts",
    "rule": "Rules",
    "action": "Actions",
    "outcome": "Outcomes",
}

# Health states, worst first; each is shown with its words, never by colour alone.
FAILING, WARNING, OK, IDLE, DISABLED, INFO = "failing", "warning", "ok", "idle", "disabled", "info"
HEALTH_STATES = (FAILING, WARNING, OK, IDLE, DISABLED, INFO)
_SEVERITY = {FAILING: 0, WARNING: 1, OK: 2, IDLE: 3, DISABLED: 4, INFO: 5}

OUTCOME_WORDS = dict(Escalation.Outcome.choices)
_FAILED_RUNS = (SyncRun.Status.FAILED, SyncRun.Status.PARTIAL)
_EVALUATION_OUTCOMES = tuple(Decision.Verdict.values)


@dataclass
class Node:
    """One box of the map: what it is, its counts over the window, its health, and where it is configured."""

    id: str
    kind: str
    label: str
    detail: str = ""
    health: str = OK
    health_text: str = "OK"
    counts: dict[str, float | int | None] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)  # (what, url): where it is configured

    @property
    def summary(self) -> str:
        """The counts in a few words, for the box and the table."""
        return summarise(self)


@dataclass
class Edge:
    """``source`` feeds ``target``; ``count`` is the traffic along it in the window where it has one."""

    source: str
    target: str
    count: int | None = None
    configured: bool = True  # False: seen in the window's traffic only (an action of an older version)


@dataclass
class Graph:
    window: str
    since: dt.datetime
    now: dt.datetime
    nodes: list[Node]
    edges: list[Edge]

    @functools.cached_property
    def by_id(self) -> dict[str, Node]:
        return {node.id: node for node in self.nodes}

    def column(self, kind: str) -> list[Node]:
        return [node for node in self.nodes if node.kind == kind]

    def upstream(self, node_id: str) -> list[tuple[Node, Edge]]:
        return [(self.by_id[e.source], e) for e in self.edges if e.target == node_id]

    def downstream(self, node_id: str) -> list[tuple[Node, Edge]]:
        return [(self.by_id[e.target], e) for e in self.edges if e.source == node_id]

    def path_through(self, node_id: str) -> set[str]:
        """Every node upstream and downstream of ``node_id`` (itself included): what it takes part in."""
        if node_id not in self.by_id:
            return set()
        out: dict[str, list[str]] = defaultdict(list)
        into: dict[str, list[str]] = defaultdict(list)
        for edge in self.edges:
            out[edge.source].append(edge.target)
            into[edge.target].append(edge.source)
        seen = {node_id}
        for neighbours in (out, into):
            stack = [node_id]
            while stack:
                for nxt in neighbours[stack.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
        return seen

    def totals(self) -> dict[str, int]:
        """The window's headline figures."""

        def total(kind: str, key: str) -> int:
            return int(sum((n.counts.get(key) or 0) for n in self.column(kind)))

        return {
            "systems": len(self.column("system")),
            "streams": len(self.column("stream")),
            "facts": len(self.column("fact")),
            "rules": len(self.column("rule")),
            "actions": len(self.column("action")),
            "records": total("stream", "records"),
            "webhooks": total("system", "webhooks"),
            "evaluations": total("rule", "evaluations"),
            "matches": total("rule", "matched"),
            "deliveries_sent": total("action", "sent"),
            "deliveries_failed": total("action", "failed"),
            "deliveries_dead": total("action", "dead"),
            "outcomes": total("outcome", "escalations"),
            "failing": sum(1 for n in self.nodes if n.health == FAILING),
            "warning": sum(1 for n in self.nodes if n.health == WARNING),
        }


# The map is read again on every click (each box focuses the page): one build serves the clicks of the
# next few seconds, for every viewer. The page says when it was built.
CACHE_SECONDS = 20


def cached_map(window: str) -> Graph:
    """``build_map(window)``, reused for up to ``CACHE_SECONDS``."""
    key = f"orchestration:map:{window}"
    graph: Graph | None = cache.get(key)
    if graph is None:
        graph = build_map(window)
        cache.set(key, graph, CACHE_SECONDS)
    return graph


def parse_window(raw: str | None) -> str | None:
    """The window key for ``raw`` (``1h``, ``24h``, ``7d``); None when it is not one."""
    if raw is None or raw == "":
        return DEFAULT_WINDOW
    return raw if raw in WINDOWS else None


# --- the five queries -----------------------------------------------------------------------------------

_STREAMS_SQL = """
SELECT c.id, c.slug, c.kind, c.enabled, c.schedule, c.options,
       s.stream, s.last_success_at,
       runs.records, runs.changed, runs.runs, runs.failed,
       latest.status, latest.error,
       hooks.n AS webhooks
FROM {connection} c
LEFT JOIN {state} s ON s.connection_id = c.id
LEFT JOIN LATERAL (
    SELECT SUM(COALESCE((r.counts->>'seen')::bigint, 0)) AS records,
           SUM(COALESCE((r.counts->>'inserted')::bigint, 0) + COALESCE((r.counts->>'updated')::bigint, 0))
               AS changed,
           COUNT(*) AS runs,
           COUNT(*) FILTER (WHERE r.status = ANY(%(failed)s)) AS failed
    FROM {run} r
    WHERE r.connection_id = c.id AND r.stream = s.stream AND r.started_at >= %(since)s
) runs ON TRUE
LEFT JOIN LATERAL (
    SELECT r.status, LEFT(r.error, 200) AS error FROM {run} r
    WHERE r.connection_id = c.id AND r.stream = s.stream
    ORDER BY r.started_at DESC LIMIT 1
) latest ON TRUE
LEFT JOIN LATERAL (
    SELECT COUNT(*) AS n FROM {webhook} w WHERE w.connection_id = c.id AND w.received_at >= %(since)s
) hooks ON TRUE
ORDER BY c.slug, s.stream
"""

# Evaluations per rule and outcome. A bulk run traces only some pairs as decisions (at the run's own
# ``evaluated_at``) and counts every pair in its ``outcomes``: those decisions are counted by the run,
# the others (evaluations of a few subjects at a time) one row each.
_EVALUATIONS_SQL = """
SELECT rule_id, outcome, SUM(n)::bigint FROM (
    SELECT v.rule_id, d.outcome, COUNT(*) AS n
    FROM {decision} d JOIN {version} v ON v.id = d.rule_version_id
    WHERE d.evaluated_at >= %(since)s
      AND NOT EXISTS (
          SELECT 1 FROM {evaluation_run} r
          WHERE r.subject_type = d.subject_type AND r.evaluated_at = d.evaluated_at
      )
    GROUP BY 1, 2
    UNION ALL
    SELECT v.rule_id, o.key, SUM(o.value::bigint)
    FROM {evaluation_run} r
    CROSS JOIN LATERAL jsonb_array_elements(r.outcomes) AS e(item)
    JOIN {version} v ON v.id = (e.item->>'rule_version_id')::bigint
    CROSS JOIN LATERAL jsonb_each_text(e.item) AS o(key, value)
    WHERE r.evaluated_at >= %(since)s AND o.key = ANY(%(outcomes)s)
    GROUP BY 1, 2
) per GROUP BY 1, 2
"""

# The outbox in two groupings: deliveries made in the window per (rule, action, state), and escalations
# closed in the window per (action, outcome label).
_DELIVERIES_SQL = """
SELECT e.rule_id, d.action, d.state, e.outcome, GROUPING(e.outcome) AS per_state,
       COUNT(*) FILTER (WHERE d.created_at >= %(since)s) AS deliveries,
       COUNT(DISTINCT e.id) FILTER (WHERE e.closed_at >= %(since)s AND e.outcome <> '') AS closed
FROM {delivery} d JOIN {escalation} e ON e.id = d.escalation_id
WHERE d.created_at >= %(since)s OR e.closed_at >= %(since)s
GROUP BY GROUPING SETS ((e.rule_id, d.action, d.state), (d.action, e.outcome))
"""

_ESCALATIONS_SQL = """
SELECT rule_id, outcome,
       COUNT(*) FILTER (WHERE opened_at >= %(since)s) AS opened,
       COUNT(*) FILTER (WHERE closed_at >= %(since)s AND outcome <> '') AS closed
FROM {escalation}
WHERE opened_at >= %(since)s OR closed_at >= %(since)s
GROUP BY 1, 2
"""


def _tables() -> dict[str, str]:
    return {
        "connection": Connection._meta.db_table,
        "state": StreamState._meta.db_table,
        "run": SyncRun._meta.db_table,
        "webhook": WebhookDelivery._meta.db_table,
        "decision": Decision._meta.db_table,
        "evaluation_run": EvaluationRun._meta.db_table,
        "version": RuleVersion._meta.db_table,
        "delivery": Delivery._meta.db_table,
        "escalation": Escalation._meta.db_table,
    }


def _rows(sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    with db.cursor() as cursor:
        cursor.execute(sql.format(**_tables()), params)
        return list(cursor.fetchall())


# --- what each rule version reads -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _facts_read(version_id: int, spec_hash: str, subject_type: str, when: str) -> frozenset[str]:
    """The facts a published version's conditions test (versions are immutable: cached by id and hash)."""
    tree = json.loads(when)
    try:
        return compile_condition(tree, subject_type).facts
    except RuleValidationError:
        # A version the catalogue no longer accepts (a fact since renamed): still show what it names.
        return frozenset(_named_facts(tree))


def _named_facts(tree: Any) -> Iterator[str]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if key in ("fact", "other") and isinstance(value, str):
                yield value
            else:
                yield from _named_facts(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _named_facts(item)


def facts_read_by(
    version_id: int, spec: Mapping[str, Any], subject_type: str, spec_hash: str = ""
) -> frozenset[str]:
    """The facts ``spec`` (a published version's) reads in its conditions."""
    return _facts_read(
        version_id, spec_hash, subject_type, json.dumps(spec.get("when") or {}, sort_keys=True)
    )


# --- building -------------------------------------------------------------------------------------------


_PK = "0000000000"


@functools.lru_cache(maxsize=64)
def _admin_url(name: str, with_pk: bool) -> str:
    # reverse() costs ~0.3 ms a call and the map links ~150 nodes: reverse each admin page once, with a
    # placeholder id replaced per node.
    return reverse(f"admin:{name}", args=[_PK] if with_pk else [])


def _admin(name: str, *args: Any, query: Mapping[str, Any] | None = None) -> str:
    url = _admin_url(name, bool(args))
    if args:
        url = url.replace(_PK, str(args[0]), 1)
    return f"{url}?{urlencode(query)}" if query else url


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never synced"
    return f"{duration_words(seconds)} ago"


def duration_words(seconds: float) -> str:
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{int(s)} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 172800:
        return f"{round(s / 3600)} h"
    return f"{round(s / 86400)} days"


def _worst(states: Iterable[str], default: str = IDLE) -> str:
    ordered = sorted(states, key=_SEVERITY.__getitem__)
    return ordered[0] if ordered else default


def build_map(window: str = DEFAULT_WINDOW, *, now: dt.datetime | None = None) -> Graph:
    """The orchestration map over ``window`` ending ``now``."""
    now = now or timezone.now()
    since = now - WINDOWS[window]
    params = {"since": since}
    nodes: list[Node] = []
    edges: list[Edge] = []

    # Systems and streams.
    kind_labels = dict(kind_choices())
    kinds_cache: dict[int, Any] = {}
    entity_streams: dict[str, list[str]] = defaultdict(list)
    systems: dict[int, Node] = {}
    system_states: dict[int, list[str]] = defaultdict(list)
    stream_nodes: list[Node] = []
    for row in _rows(_STREAMS_SQL, {**params, "failed": [str(s) for s in _FAILED_RUNS]}):
        (pk, slug, kind, enabled, schedule, options, stream, last_success, records, changed, runs, failed,
         last_status, last_error, webhooks) = row  # fmt: skip
        if pk not in systems:
            systems[pk] = Node(
                id=f"system:{pk}",
                kind="system",
                label=slug,
                detail=kind_labels.get(kind, kind),
                counts={"streams": 0, "records": 0, "webhooks": int(webhooks or 0), "failed_runs": 0},
                links=[
                    ("Connection", _admin("connectors_connection_change", pk)),
                    (
                        "Sync runs",
                        _admin("connectors_syncrun_changelist", query={"connection__id__exact": pk}),
                    ),
                ],
            )
            if not enabled:
                systems[pk].health = DISABLED
        if stream is None:
            continue
        system = systems[pk]
        lag = None if last_success is None else max(0.0, (now - last_success).total_seconds())
        limit = 2 * schedule_interval(schedule or "")
        node = Node(
            id=f"stream:{pk}:{stream}",
            kind="stream",
            label=stream,
            detail=slug,
            counts={
                "records": int(records or 0),
                "changed": int(changed or 0),
                "runs": int(runs or 0),
                "failed_runs": int(failed or 0),
                "lag_seconds": None if lag is None else round(lag),
            },
            links=[
                (
                    "Sync runs",
                    _admin(
                        "connectors_syncrun_changelist",
                        query={"connection__id__exact": pk, "stream__exact": stream},
                    ),
                ),
                ("Connection", _admin("connectors_connection_change", pk)),
            ],
        )
        if not enabled:
            node.health, node.health_text = DISABLED, "Disabled"
        elif last_status in _FAILED_RUNS:
            node.health = FAILING
            node.health_text = f"Failing: last run {last_status}" + (f" ({last_error})" if last_error else "")
        elif lag is None or lag > limit.total_seconds():
            node.health, node.health_text = WARNING, f"Stale: last success {_ago(lag)}"
        else:
            node.health_text = f"OK: last success {_ago(lag)}"
        system.counts["streams"] = int(system.counts["streams"] or 0) + 1
        system.counts["records"] = int(system.counts["records"] or 0) + node.counts["records"]  # type: ignore[operator]
        system.counts["failed_runs"] = int(system.counts["failed_runs"] or 0) + int(failed or 0)
        system_states[pk].append(node.health)
        stream_nodes.append(node)
        edges.append(Edge(system.id, node.id, count=node.counts["records"]))  # type: ignore[arg-type]
        conn = Connection(pk=pk, slug=slug, kind=kind, options=options or {})
        entity = stream_entity(conn, stream, kinds_cache)
        if entity is not None:
            entity_streams[entity].append(node.id)
    for pk, system in systems.items():
        if system.health == DISABLED:
            system.health_text = "Disabled"
            continue
        state = _worst(system_states[pk], default=IDLE)
        system.health = state
        failing = sum(1 for s in system_states[pk] if s == FAILING)
        stale = sum(1 for s in system_states[pk] if s == WARNING)
        system.health_text = {
            FAILING: f"Failing: {failing} of {len(system_states[pk])} streams",
            WARNING: f"Stale: {stale} of {len(system_states[pk])} streams",
            OK: "OK: every stream fresh",
            IDLE: "Idle: never synced",
        }.get(state, state.capitalize())
    nodes.extend(systems.values())
    nodes.extend(stream_nodes)

    # Rules (published ones) and the facts they read.
    rules = list(
        Rule.objects.filter(live_version__isnull=False)
        .order_by("key")
        .values(
            "pk",
            "key",
            "name",
            "enabled",
            "subject_type",
            "live_version_id",
            "live_version__number",
            "live_version__spec",
            "live_version__spec_hash",
        )
    )
    readers: dict[str, list[str]] = defaultdict(list)
    rule_nodes: dict[int, Node] = {}
    rule_actions: dict[int, list[str]] = {}
    for r in rules:
        spec = r["live_version__spec"] or {}
        read = facts_read_by(r["live_version_id"], spec, r["subject_type"], r["live_version__spec_hash"])
        node = Node(
            id=f"rule:{r['key']}",
            kind="rule",
            label=r["name"] or r["key"],
            detail=f"{r['key']} v{r['live_version__number']}",
            counts={
                "facts": len(read),
                "evaluations": 0,
                **dict.fromkeys(_EVALUATION_OUTCOMES, 0),
                "escalations_opened": 0,
                "escalations_closed": 0,
            },
            links=[
                ("Rule", _admin("rules_rule_change", r["pk"])),
                ("Rule analytics", _admin("learning_ruleanalytics_changelist", query={"rule": r["key"]})),
            ],
        )
        if not r["enabled"]:
            node.health = DISABLED
        rule_nodes[r["pk"]] = node
        rule_actions[r["pk"]] = [str(a) for a in spec.get("actions") or []]
        for fact in sorted(read):
            readers[fact].append(node.id)

    # Facts: the catalogue's, and any a rule reads that it does not hold.
    fact_names = list(FACTS) + sorted(set(readers) - set(FACTS))
    fact_nodes: list[Node] = []
    for name in fact_names:
        entry = FACTS.get(name)
        feeding = sorted({s for entity in FACT_INPUTS.get(name, ()) for s in entity_streams.get(entity, [])})
        node = Node(
            id=f"fact:{name}",
            kind="fact",
            label=name,
            detail=(entry.label if entry else "not in the catalogue"),
            counts={"rules": len(readers.get(name, [])), "streams": len(feeding)},
        )
        if entry is None:
            node.health, node.health_text = FAILING, "Unknown fact: not in the catalogue"
        elif not readers.get(name):
            node.health, node.health_text = IDLE, "Idle: no published rule reads it"
        elif FACT_INPUTS.get(name) and not feeding:
            node.health, node.health_text = WARNING, "No stream feeds it"
        else:
            node.health_text = "OK" if FACT_INPUTS.get(name) else "OK: computed by Fulcrum"
        fact_nodes.append(node)
        edges.extend(Edge(stream_id, node.id) for stream_id in feeding)
        edges.extend(Edge(node.id, rule_id) for rule_id in readers.get(name, []))
    by_id = {n.id: n for n in [*stream_nodes, *fact_nodes]}
    for node in fact_nodes:
        if node.health == OK and FACT_INPUTS.get(node.label):
            inputs = [by_id[e.source] for e in edges if e.target == node.id and e.source in by_id]
            worst = _worst((s.health for s in inputs if s.health != DISABLED), default=OK)
            if worst in (FAILING, WARNING):
                node.health, node.health_text = WARNING, "Inputs stale or failing"
    nodes.extend(fact_nodes)

    # Evaluations.
    for rule_id, outcome, n in _rows(_EVALUATIONS_SQL, {**params, "outcomes": list(_EVALUATION_OUTCOMES)}):
        evaluated = rule_nodes.get(rule_id)
        if evaluated is not None and outcome in evaluated.counts:
            evaluated.counts[outcome] = int(evaluated.counts[outcome] or 0) + int(n)
            evaluated.counts["evaluations"] = int(evaluated.counts["evaluations"] or 0) + int(n)

    # Escalations opened and closed, per rule and outcome label.
    outcome_counts: dict[str, int] = dict.fromkeys(OUTCOME_WORDS, 0)
    for rule_id, outcome, opened, closed in _rows(_ESCALATIONS_SQL, params):
        escalated = rule_nodes.get(rule_id)
        if escalated is not None:
            escalated.counts["escalations_opened"] = int(escalated.counts["escalations_opened"] or 0) + int(
                opened
            )
            escalated.counts["escalations_closed"] = int(escalated.counts["escalations_closed"] or 0) + int(
                closed
            )
        if outcome in outcome_counts:
            outcome_counts[outcome] += int(closed)

    # The outbox.
    action_counts: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("sent", "failed", "dead", "waiting"), 0)
    )
    rule_action: dict[tuple[int, str], int] = defaultdict(int)
    action_outcome: dict[tuple[str, str], int] = {}
    for rule_id, action, state, outcome, per_state, deliveries, closed in _rows(_DELIVERIES_SQL, params):
        if per_state:
            bucket = {
                Delivery.State.DELIVERED: "sent",
                Delivery.State.FAILED: "failed",
                Delivery.State.DEAD: "dead",
            }.get(state, "waiting")
            action_counts[action][bucket] += int(deliveries)
            if rule_id in rule_nodes and deliveries:
                rule_action[(rule_id, action)] += int(deliveries)
        elif closed and outcome in OUTCOME_WORDS:
            action_outcome[(action, outcome)] = int(closed)

    configured_by: dict[str, int] = defaultdict(int)
    for actions in rule_actions.values():
        for action in actions:
            configured_by[action] += 1
    action_names = sorted(set(configured_by) | set(action_counts))
    for name in action_names:
        counts = action_counts[name]
        node = Node(
            id=f"action:{name}",
            kind="action",
            label=action_words(name),
            detail=name,
            counts={**counts, "rules": configured_by.get(name, 0)},
            links=[("Outbox", _admin("escalations_delivery_changelist", query={"action__exact": name}))],
        )
        if counts["dead"]:
            node.health, node.health_text = FAILING, f"Failing: {counts['dead']} dead"
        elif counts["failed"]:
            node.health, node.health_text = WARNING, f"Retrying: {counts['failed']} failed"
        elif not any(counts.values()):
            node.health, node.health_text = IDLE, "Idle: nothing sent in the window"
        else:
            node.health_text = "OK: delivered"
        nodes.append(node)
    for rule_id, actions in rule_actions.items():
        for action in actions:
            edges.append(
                Edge(rule_nodes[rule_id].id, f"action:{action}", count=rule_action.pop((rule_id, action), 0))
            )
    for (rule_id, action), n in sorted(rule_action.items()):
        edges.append(Edge(rule_nodes[rule_id].id, f"action:{action}", count=n, configured=False))

    # Rule health, now that its counts are in.
    for node in rule_nodes.values():
        c = node.counts
        if node.health == DISABLED:
            node.health_text = "Disabled"
        elif c[Decision.Verdict.ERROR]:
            node.health, node.health_text = FAILING, f"Failing: {c[Decision.Verdict.ERROR]} errors"
        elif c[Decision.Verdict.INSUFFICIENT]:
            node.health = WARNING
            node.health_text = f"Insufficient data: {c[Decision.Verdict.INSUFFICIENT]} evaluations"
        elif not c["evaluations"]:
            node.health, node.health_text = IDLE, "Idle: not evaluated in the window"
        else:
            node.health_text = "OK"
    nodes.extend(rule_nodes.values())

    for label, words in OUTCOME_WORDS.items():
        nodes.append(
            Node(
                id=f"outcome:{label}",
                kind="outcome",
                label=str(words).replace("_", " ").capitalize(),
                detail=label,
                health=INFO,
                health_text="Outcome label",
                counts={"escalations": outcome_counts[label]},
                links=[
                    (
                        "Escalations",
                        _admin("escalations_escalation_changelist", query={"outcome__exact": label}),
                    )
                ],
            )
        )
    for (action, label), n in sorted(action_outcome.items()):
        edges.append(Edge(f"action:{action}", f"outcome:{label}", count=n))

    return Graph(window=window, since=since, now=now, nodes=_ordered(nodes, edges), edges=edges)


def _ordered(nodes: list[Node], edges: list[Edge]) -> list[Node]:
    """Columns in flow order; within a column, each node near the nodes that feed it (fewer crossings)."""
    position: dict[str, float] = {}
    into: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        into[edge.target].append(edge.source)
    out: list[Node] = []
    for kind in KINDS:
        column = [n for n in nodes if n.kind == kind]
        if kind not in ("system", "outcome"):

            def centre(node: Node) -> float:
                feeds = [position[s] for s in into[node.id] if s in position]
                return sum(feeds) / len(feeds) if feeds else float("inf")

            column.sort(key=lambda n: (centre(n), n.label))
        for i, node in enumerate(column):
            position[node.id] = i
        out.extend(column)
    return out


def summarise(node: Node) -> str:
    c = node.counts
    if node.kind == "system":
        return f"{c['records']:,} records · {c['webhooks']:,} webhooks"
    if node.kind == "stream":
        lag = c.get("lag_seconds")
        return f"{c['records']:,} records · lag {'—' if lag is None else duration_words(float(lag))}"
    if node.kind == "fact":
        return f"{c['rules']} rules read it"
    if node.kind == "rule":
        return f"{c['evaluations']:,} evaluated · {c[Decision.Verdict.MATCHED]:,} matched"
    if node.kind == "action":
        return f"{c['sent']:,} sent · {c['failed']:,} failed · {c['dead']:,} dead"
    return f"{c['escalations']:,} escalations"
