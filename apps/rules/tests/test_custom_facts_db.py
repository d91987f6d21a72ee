"""Operator-defined facts on real PostgreSQL: saved as versions or refused with nothing saved, computed
identically by the batch SQL and the per-event Python paths (property test over random data and random
definitions, every subject type), values always parameters, used by rules (``other:`` too) whose
decisions record each custom fact's version and explain it with its definition."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apps.audit.models import AuditEntry, canonical_json
from apps.audit.services import audit_verify
from apps.escalations.models import Escalation
from apps.orchestration.pipeline import evaluate_subjects
from apps.rules.engine import customfacts as cf
from apps.rules.engine.evaluator import compile_condition
from apps.rules.evaluation.custom import CustomFactRefused, custom_fact_save, installed, preview, refresh
from apps.rules.evaluation.facts import compute_contexts
from apps.rules.evaluation.services import rules_import
from apps.rules.evaluation.sql import batch_outcomes_many
from apps.rules.models import CustomFact, CustomFactVersion, Decision
from apps.rules.tests.test_backtest import fresh_streams
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
    SubmittalFactory,
    VendorFactory,
)

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 15, 17, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 6, 15)
SUBJECTS = ("project", "change_order", "client", "submittal")


@pytest.fixture(autouse=True)
def _clean_catalogue():
    yield
    cf.install({})


def count_pending(**kw: Any) -> dict[str, Any]:
    spec = {
        "key": "co_pending_30d", "subject": "project", "type": "int", "unit": "count",
        "description": "pending change orders this month", "kind": "aggregate", "related": "change_orders",
        "function": "count", "filters": [{"field": "status", "op": "eq", "value": "pending"}],
        "window": "30d",
    }  # fmt: skip
    spec.update(kw)
    return spec


# --- saving ----------------------------------------------------------------------------------------


def test_each_save_is_a_new_version_and_is_audited(ops_manager):
    first = custom_fact_save(spec=count_pending(), actor=ops_manager)
    second = custom_fact_save(spec=count_pending(window="7d"), actor=ops_manager)
    fact = CustomFact.objects.get(key="co_pending_30d")
    assert (first.number, second.number, fact.current_id) == (1, 2, second.pk)
    assert installed()["custom.co_pending_30d"].version == 2
    assert installed()["custom.co_pending_30d"].window == dt.timedelta(days=7)
    assert AuditEntry.objects.filter(action="custom_fact.saved").count() == 2
    with pytest.raises(Exception, match=r"refus|immutable|not allowed|change"), transaction.atomic():
        CustomFactVersion.objects.filter(pk=first.pk).update(spec={})  # the database refuses


def test_a_type_error_is_refused_and_nothing_is_saved(ops_manager):
    with pytest.raises(CustomFactRefused, match="not money"):
        custom_fact_save(spec=count_pending(type="money", unit="USD"), actor=ops_manager)
    assert not CustomFact.objects.exists() and not CustomFactVersion.objects.exists()


def test_a_cycle_is_refused_and_nothing_is_saved(ops_manager):
    gap = {"key": "gap", "subject": "project", "type": "money", "unit": "USD", "kind": "difference",
           "a": "project.income_to_date", "b": "project.cost_to_date"}  # fmt: skip
    custom_fact_save(spec=gap, actor=ops_manager)
    custom_fact_save(spec={**gap, "key": "gap2", "a": "custom.gap"}, actor=ops_manager)
    with pytest.raises(CustomFactRefused, match=r"custom\.gap → custom\.gap2 → custom\.gap"):
        custom_fact_save(spec={**gap, "a": "custom.gap2"}, actor=ops_manager)
    assert CustomFactVersion.objects.count() == 2
    assert installed()["custom.gap"].a == "project.income_to_date"


def test_type_and_unit_cannot_change_once_saved(ops_manager):
    custom_fact_save(spec=count_pending(), actor=ops_manager)
    changed = count_pending(function="sum", field="amount", type="money", unit="USD")
    with pytest.raises(CustomFactRefused, match="keeps its subject, type and unit"):
        custom_fact_save(spec=changed, actor=ops_manager)
    assert CustomFactVersion.objects.count() == 1


INJECTIONS = ["'; DROP TABLE entities_project; --", "x') OR 1=1 --", '"; DELETE FROM rules_rule; --']


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_strings_in_every_field_are_refused_or_bound(ops_manager, text):
    project = ProjectFactory()
    SubmittalFactory(project=project, status=text, due_date=TODAY)
    SubmittalFactory(project=project, status="open", due_date=TODAY)
    base = count_pending(key="subs", related="submittals", filters=[], window="")
    for name in ("key", "subject", "type", "unit", "description", "kind", "related", "function", "field",
                 "window"):  # fmt: skip
        try:
            custom_fact_save(spec={**base, name: text}, actor=ops_manager)
        except CustomFactRefused:
            continue
        assert name in ("description",), name  # only free text may be saved, and it is never SQL
    for filt in ({"field": text, "op": "eq", "value": "x"}, {"field": "status", "op": text, "value": "x"}):
        with pytest.raises(CustomFactRefused):
            custom_fact_save(spec={**base, "filters": [filt]}, actor=ops_manager)
    with pytest.raises(CustomFactRefused):
        custom_fact_save(
            spec={**base, "kind": "ratio", "a": text, "b": "project.cost_to_date"}, actor=ops_manager
        )
    # As a value it is a parameter: it counts the one submittal whose status is that text.
    custom_fact_save(
        spec={**base, "filters": [{"field": "status", "op": "eq", "value": text}]}, actor=ops_manager
    )
    for python in (True, False):
        [ctx] = compute_contexts("project", [project.pk], now=NOW, custom_in_python=python)
        assert ctx.values["custom.subs"] == 1
    [ctx] = [c for c in compute_contexts("project", now=NOW) if c.subject_id == project.pk]
    assert ctx.values["custom.subs"] == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM entities_project")
        assert cursor.fetchone()[0] == 1


# --- SQL and Python agree --------------------------------------------------------------------------


@st.composite
def company(draw):
    spec = []
    for _ in range(draw(st.integers(1, 2))):
        projects = []
        for _ in range(draw(st.integers(1, 2))):
            projects.append(
                {
                    "lines": draw(st.lists(st.tuples(
                        st.sampled_from(["invoice", "bill", "purchase"]),
                        st.sampled_from(["0", "100", "999.99", "50000", "-25.5"]),
                        st.one_of(st.none(), st.sampled_from(["0", "10", "9000"])),
                        st.one_of(st.none(), st.integers(-40, 40)),
                    ), max_size=3)),
                    "milestones": draw(st.lists(st.tuples(
                        st.one_of(st.none(), st.integers(-40, 40)), st.one_of(st.none(), st.integers(-10, 10))
                    ), max_size=2)),
                    "cos": draw(st.lists(st.tuples(
                        st.sampled_from(["0", "999.99", "50000", "75000.5"]),
                        st.sampled_from(["draft", "pending", "approved", "rejected", "void"]),
                        st.sampled_from([0, 6, 7, 8, 29, 30, 31, 45]),
                        st.booleans(),
                    ), min_size=1, max_size=3)),
                    "subs": draw(st.lists(st.tuples(
                        st.integers(0, 3), st.sampled_from(["open", "closed", ""]), st.booleans(),
                        st.one_of(st.none(), st.integers(-40, 40)), st.one_of(st.none(), st.integers(-5, 5)),
                    ), min_size=1, max_size=3)),
                }
            )  # fmt: skip
        spec.append((draw(st.booleans()), projects))
    return spec


def build_company(spec) -> None:
    vendor = VendorFactory()
    for has_client, projects in spec:
        client = ClientFactory() if has_client else None
        for p in projects:
            project = ProjectFactory(client=client, contract_value=Decimal("100000"))
            for kind, amount, balance, days in p["lines"]:
                FinancialLineFactory(
                    project=project, kind=kind, amount=Decimal(amount),
                    balance=None if balance is None else Decimal(balance),
                    txn_date=None if days is None else TODAY - dt.timedelta(days=days),
                )  # fmt: skip
            for due, done in p["milestones"]:
                MilestoneFactory(
                    project=project,
                    due_date=None if due is None else TODAY - dt.timedelta(days=due),
                    completed_date=None
                    if due is None or done is None
                    else TODAY - dt.timedelta(days=due - done),
                )
            for amount, status, age, deleted in p["cos"]:
                ChangeOrderFactory(
                    project=project, amount=Decimal(amount), status=status,
                    created_upstream_at=NOW - dt.timedelta(days=age, hours=1 if age else 0),
                    deleted_at=NOW if deleted else None,
                )  # fmt: skip
            for revision, status, critical, due, returned in p["subs"]:
                SubmittalFactory(
                    project=project, vendor=vendor, revision=revision, status=status,
                    schedule_critical=critical,
                    due_date=None if due is None else TODAY - dt.timedelta(days=due),
                    returned_date=None if due is None or returned is None
                    else TODAY - dt.timedelta(days=due - returned),
                )  # fmt: skip
    # A change order without a project: its project-scoped aggregates are 0 / null in both paths.
    ChangeOrderFactory(project=None, project_ref="gone", amount=Decimal("5"), created_upstream_at=NOW)


def _filter_for(field: cf.SetField, draw) -> dict[str, Any]:
    kind = field.type
    if kind is cf.FactType.BOOL:
        op = draw(st.sampled_from(["is", "is_null"]))
        return {"field": field.name, "op": op, "value": draw(st.booleans())}
    op = draw(st.sampled_from(cf.FILTER_OPS[kind]))
    if op == "is_null":
        return {"field": field.name, "op": op, "value": draw(st.booleans())}
    if kind is cf.FactType.TEXT:
        pool = list(field.choices) or ["open", "closed", ""]
        one = st.sampled_from(pool)
    elif kind is cf.FactType.INT:
        one = st.integers(0, 3)
    elif kind is cf.FactType.DATE:
        one = st.integers(-20, 20).map(lambda d: (TODAY - dt.timedelta(days=d)).isoformat())
    else:
        one = st.sampled_from(["0", "100", "999.99", "50000", "-25.5", "10"])
    if op in ("in", "not_in"):
        return {"field": field.name, "op": op, "value": draw(st.lists(one, min_size=1, max_size=3))}
    return {"field": field.name, "op": op, "value": draw(one)}


@st.composite
def aggregate_spec(draw, subject: str, key: str):
    related = draw(st.sampled_from(sorted(cf.RELATED_SETS)))
    fields = cf.RELATED_SETS[related].fields
    function = draw(st.sampled_from(cf.FUNCTIONS))
    if function == "count":
        field = draw(st.sampled_from(["", *fields]))
    elif function in ("min", "max"):
        field = draw(
            st.sampled_from([n for n, f in fields.items() if f.type in (*cf._NUMERIC, cf.FactType.DATE)])
        )
    elif function == "sum":
        options = [n for n, f in fields.items() if f.type in cf._NUMERIC]
        assume(options)
        field = draw(st.sampled_from(options))
    else:
        options = [n for n, f in fields.items() if f.type is cf.FactType.MONEY]
        assume(options)
        field = draw(st.sampled_from(options))
    if function == "count":
        kind, unit = "int", "count"
    else:
        kind, unit = fields[field].type.value, fields[field].unit
    filters = [
        _filter_for(fields[draw(st.sampled_from(sorted(fields)))], draw)
        for _ in range(draw(st.integers(0, 2)))
    ]
    window = draw(st.sampled_from(["", "7d", "30d"]))
    return {
        "key": key, "subject": subject, "type": kind, "unit": unit, "kind": "aggregate", "related": related,
        "function": function, "field": field, "filters": filters, "window": window,
    }  # fmt: skip


def _same_unit(a: cf.Definition, b: cf.Definition) -> bool:
    return a.unit == b.unit and (a.type is cf.FactType.PERCENT) == (b.type is cf.FactType.PERCENT)


def _values(subject: str, python: bool) -> dict[int, dict[str, Any]]:
    return {
        c.subject_id: {k: v for k, v in c.values.items() if k.startswith("custom.")}
        for c in compute_contexts(
            subject,
            None if not python else _ids(subject),
            now=NOW,
            custom_in_python=python,
            refresh_custom=False,
        )
    }


def _ids(subject: str) -> list[int]:
    table = cf.SUBJECT_KEYS[subject].table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE deleted_at IS NULL ORDER BY id")  # noqa: S608
        return [row[0] for row in cursor.fetchall()]


class _Rollback(Exception):
    pass


def test_sql_and_python_agree_on_random_custom_facts_for_every_subject_type():
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        data=company(),
        subject=st.sampled_from(SUBJECTS),
        draw=st.data(),
    )
    def check(data, subject, draw):
        specs = [draw.draw(aggregate_spec(subject, f"agg{i}")) for i in range(3)]
        defs: dict[str, cf.Definition] = {}
        for spec in specs:
            try:
                d = cf.parse_definition(spec, others=defs)
            except cf.DefinitionError:
                continue
            defs[d.name] = d
        assume(defs)
        numeric = [n for n, d in defs.items() if d.type in cf._NUMERIC]
        for i, name in enumerate(numeric[:2]):
            other = next((m for m in numeric if m != name and _same_unit(defs[m], defs[name])), None)
            if other is None:
                continue
            for kind in ("ratio", "difference"):
                same = defs[name].type == defs[other].type
                if kind == "difference" and not same:
                    continue
                t, u = ("percent", "%") if kind == "ratio" else (defs[name].type.value, defs[name].unit)
                d = cf.parse_definition(
                    {"key": f"{kind}{i}", "subject": subject, "type": t, "unit": u, "kind": kind,
                     "a": name, "b": other}, others=defs,
                )  # fmt: skip
                defs[d.name] = d
        try:
            with transaction.atomic():
                build_company(data)
                cf.install(defs)
                batch, event = _values(subject, False), _values(subject, True)
                assert batch == event, (specs, batch, event)
                assert all(set(v) == set(defs) for v in batch.values())
                # Rules on them agree too: SQL outcomes against the evaluator on the event contexts.
                trees = [{"fact": n, "op": "is_null", "value": False} for n in defs]
                trees += [
                    {"fact": n, "op": "gte", "value": 1} for n in defs if defs[n].type is cf.FactType.INT
                ]
                if (
                    len(numeric) >= 2
                    and defs[numeric[0]].unit == defs[numeric[1]].unit
                    and (defs[numeric[0]].type == defs[numeric[1]].type)
                ):
                    trees.append({"fact": numeric[0], "op": "gt", "other": numeric[1]})
                compiled = [compile_condition(t, subject) for t in trees]
                sql = batch_outcomes_many(compiled, subject, now=NOW)
                contexts = list(
                    compute_contexts(
                        subject, _ids(subject), now=NOW, custom_in_python=True, refresh_custom=False
                    )
                )
                python = [{c.subject_id: cond.matches(c.values).value for c in contexts} for cond in compiled]
                assert sql == python
                raise _Rollback
        except _Rollback:
            pass

    check()


def test_a_client_sees_every_live_project_and_a_window_is_inclusive():
    client = ClientFactory()
    a, b = ProjectFactory(client=client), ProjectFactory(client=client)
    gone = ProjectFactory(client=client, deleted_at=NOW)
    ChangeOrderFactory(project=a, status="pending", created_upstream_at=NOW - dt.timedelta(days=30))
    ChangeOrderFactory(project=b, status="pending", created_upstream_at=NOW - dt.timedelta(days=3))
    ChangeOrderFactory(project=gone, status="pending", created_upstream_at=NOW)
    ChangeOrderFactory(project=b, status="pending", created_upstream_at=NOW - dt.timedelta(days=31))
    cf.install({"custom.cc": cf.parse_definition(count_pending(key="cc", subject="client"))})
    for python in (True, False):
        [ctx] = compute_contexts(
            "client", [client.pk], now=NOW, custom_in_python=python, refresh_custom=False
        )
        assert ctx.values["custom.cc"] == 2


# --- rules on custom facts -------------------------------------------------------------------------

RULES = """
- key: co-burst
  name: Many pending change orders on a thin project
  subject: project
  when:
    all:
      - {fact: custom.co_pending_30d, op: gte, value: 3}
      - {fact: project.cost_to_date, op: gt, other: project.income_to_date}
  route: executive
  severity: high
  actions: [flag_dashboard]
"""


def test_a_rule_on_a_custom_fact_escalates_and_its_decision_records_the_version(ops_manager):
    fresh_streams()
    custom_fact_save(spec=count_pending(window="7d"), actor=ops_manager)
    custom_fact_save(spec=count_pending(), actor=ops_manager)  # v2: 30 days
    rules_import(text=RULES, actor=ops_manager)
    project = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory()))
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal("1000"))
    FinancialLineFactory(project=project, kind="bill", amount=Decimal("1200"))
    for days in (1, 10, 20, 40):
        ChangeOrderFactory(
            project=project, status="pending", created_upstream_at=timezone.now() - dt.timedelta(days=days)
        )
    quiet = ProjectFactory()
    ChangeOrderFactory(project=quiet, status="pending")

    evaluate_subjects(subject_type="project", ids=[project.pk, quiet.pk])  # the per-event (Python) path

    decision = Decision.objects.get(subject_id=project.pk, outcome="matched")
    fact = decision.facts["custom.co_pending_30d"]
    assert (fact["value"], fact["version"]) == (3, 2)
    assert fact["definition"] == "count of change orders in the last 30 days where status = pending"
    texts = " ".join(e["text"] for e in decision.explanation["explanation"])
    assert (
        "custom.co_pending_30d (Co pending 30d) = 3 change orders — count of change orders in the last 30 "
        "days where status = pending (v2)"
    ) in texts
    assert "project.cost_to_date is $1,200.00, more than project.income_to_date ($1,000.00)" in texts
    assert Escalation.objects.filter(subject_id=project.pk, subject_type="project").exists()
    assert not Decision.objects.filter(subject_id=quiet.pk, outcome="matched").exists()
    # The audit entry carries the decision's facts, spliced in as the decision row's text: canonical
    # JSON, so the entry's hash checks in the chain and in an export.
    entry = AuditEntry.objects.get(action="decision.matched", object_id=str(decision.pk))
    assert entry.data["facts"] == decision.facts
    with connection.cursor() as cursor:
        cursor.execute("SELECT data FROM audit_auditentry WHERE id = %s", [entry.pk])
        text = cursor.fetchone()[0]
    assert text == canonical_json(json.loads(text))
    assert entry.compute_hash() == entry.hash and audit_verify().ok


def test_the_batch_run_decides_as_the_event_path(ops_manager):
    fresh_streams()
    custom_fact_save(spec=count_pending(), actor=ops_manager)
    rules_import(text=RULES, actor=ops_manager)
    projects = []
    for i in range(6):
        project = ProjectFactory()
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal("1000"))
        FinancialLineFactory(project=project, kind="bill", amount=Decimal(900 + 100 * i))
        for _ in range(i):
            ChangeOrderFactory(
                project=project, status="pending", created_upstream_at=timezone.now() - dt.timedelta(days=2)
            )
        projects.append(project)
    ids = [p.pk for p in projects]
    refresh()
    from apps.rules.evaluation.sql import batch_outcomes
    from apps.rules.models import Rule

    version = Rule.objects.get(key="co-burst").live_version
    batch = batch_outcomes(version, ids=None)
    event = {
        c.subject_id: compile_condition(version.spec["when"], "project").matches(c.values).value
        for c in compute_contexts("project", ids, custom_in_python=True)
    }
    assert batch == event
    assert sorted(k for k, v in batch.items() if v == "matched") == ids[3:]


def test_preview_gives_the_value_for_real_subjects_and_saves_nothing(ops_manager):
    projects = [ProjectFactory() for _ in range(3)]
    for i, project in enumerate(projects):
        for _ in range(i):
            ChangeOrderFactory(project=project, status="pending")
    rows = preview(count_pending(), sample=10)
    assert rows == [{"subject_id": p.pk, "value": i} for i, p in enumerate(projects)]
    assert not CustomFact.objects.exists()
    assert "custom.co_pending_30d" not in installed()
    with pytest.raises(CustomFactRefused):
        preview(count_pending(function="avg"))


# --- admin -----------------------------------------------------------------------------------------


def form_data(**kw: Any) -> dict[str, Any]:
    data = {
        "key": "co_pending_30d", "subject_type": "project", "type": "int", "unit": "count", "description": "",
        "kind": "aggregate", "related": "change_orders", "function": "count", "field": "",
        "filters": "status eq pending", "window": "30d", "a": "", "b": "",
    }  # fmt: skip
    data.update(kw)
    return data


def test_an_operations_manager_saves_previews_and_versions_a_custom_fact_in_admin(client, ops_manager):
    from django.urls import reverse

    project = ProjectFactory()
    ChangeOrderFactory(project=project, status="pending")
    client.force_login(ops_manager)
    add = reverse("admin:rules_customfact_add")

    previewed = client.post(add, form_data(_preview="1"))
    assert previewed.status_code == 200
    page = previewed.content.decode()
    assert 'id="custom-fact-preview"' in page and "count of change orders in the last 30 days" in page
    assert not CustomFact.objects.exists()

    refused = client.post(add, form_data(type="money", unit="USD"))
    assert refused.status_code == 200
    assert "this aggregate is int (count), not money (USD)" in refused.content.decode()
    assert not CustomFact.objects.exists()

    saved = client.post(add, form_data())
    assert saved.status_code == 302, saved.content.decode()[:3000]
    fact = CustomFact.objects.get()
    assert fact.current.number == 1 and fact.current.spec["filters"] == [
        {"field": "status", "op": "eq", "value": "pending"}
    ]
    change = reverse("admin:rules_customfact_change", args=[fact.pk])
    assert client.get(change).status_code == 200
    again = client.post(change, form_data(window="7d"))
    assert again.status_code == 302
    assert list(fact.versions.values_list("number", flat=True)) == [2, 1]
    listing = client.get(reverse("admin:rules_customfact_changelist"))
    assert "count of change orders in the last 7 days where status = pending" in listing.content.decode()


def test_the_rule_editor_offers_custom_facts_to_their_subject_only(client, ops_manager):
    from django.urls import reverse

    from apps.rules.authoring.editor import catalogue_data

    custom_fact_save(spec=count_pending(), actor=ops_manager)
    data = catalogue_data()
    assert data["facts"]["custom.co_pending_30d"]["subject"] == "custom:project"
    assert "custom:project" in data["visible"]["project"]
    assert "custom:project" not in data["visible"]["change_order"]
    client.force_login(ops_manager)
    page = client.get(reverse("admin:rules_rule_add")).content.decode()
    assert 'value="custom.co_pending_30d"' in page and 'data-subject="custom:project"' in page


def test_a_fact_comparison_reads_in_words_on_the_escalation_lists():
    from apps.rules.engine.wording import conditions

    condition = compile_condition(
        {"fact": "project.cost_to_date", "op": "gt", "other": "project.income_to_date"}, "project"
    )
    evaluation = condition.evaluate(
        {"project.cost_to_date": Decimal("1200"), "project.income_to_date": Decimal("1000")}
    )
    [said] = conditions({"facts": {}, "explanation": evaluation.to_json()["explanation"]})
    assert said.sentence == "Cost to date $1,200.00 is above Income to date $1,000.00"
    assert said.held


def test_a_batch_query_computes_only_the_custom_facts_its_rules_read(ops_manager):
    from apps.rules.evaluation.sql import RuleQuery, outcomes_many_sql

    custom_fact_save(spec=count_pending(), actor=ops_manager)
    custom_fact_save(spec=count_pending(key="co_all", filters=[]), actor=ops_manager)
    share = {"key": "pending_share", "subject": "project", "type": "percent", "unit": "%", "kind": "ratio",
             "a": "custom.co_pending_30d", "b": "custom.co_all"}  # fmt: skip
    custom_fact_save(spec=share, actor=ops_manager)
    builtin = RuleQuery({"fact": "project.margin_pct", "op": "lt", "value": 5}, "project")
    sql, _ = outcomes_many_sql([builtin], "project")
    assert "custom." not in sql
    reading = RuleQuery({"fact": "custom.pending_share", "op": "gt", "value": 50}, "project")
    sql, _ = outcomes_many_sql([reading], "project")
    assert all(f'"custom.{key}"' in sql for key in ("pending_share", "co_pending_30d", "co_all"))


# --- the label people read ---------------------------------------------------------------------------


def test_people_read_the_label_on_the_escalation_page_in_emails_the_api_and_the_rule_admin(
    client, ops_manager
):
    """Not ``Custom.co_pending_30d``: the operator's label, through the wording every built-in fact goes
    through; and the other fact of a comparison reads like the first (``$100,000.00``, not ``($100,000)``)."""
    from django.template.loader import render_to_string
    from django.urls import reverse

    from apps.escalations.actions.email import email_context
    from apps.rules.models import Rule

    fresh_streams()
    custom_fact_save(spec=count_pending(label="Pending change orders"), actor=ops_manager)
    assert CustomFact.objects.get().label == "Pending change orders"
    rules_import(text=RULES, actor=ops_manager)
    project = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory()))
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal("100000"))
    FinancialLineFactory(project=project, kind="bill", amount=Decimal("120000"))
    for days in (1, 10, 20):
        ChangeOrderFactory(
            project=project, status="pending", created_upstream_at=timezone.now() - dt.timedelta(days=days)
        )
    evaluate_subjects(subject_type="project", ids=[project.pk])
    escalation = Escalation.objects.get(subject_type="project", subject_id=project.pk)

    client.force_login(ops_manager)
    page = client.get(reverse("escalation-detail", args=[escalation.pk])).content.decode()
    context = email_context(escalation, "maria@example.com")
    text = render_to_string("escalations/email/escalation.txt", context)
    html = render_to_string("escalations/email/escalation.html", context)
    api = client.get(f"/api/escalations/{escalation.pk}/").json()
    traced = " ".join(node["text"] for node in api["evidence"]["explanation"])
    rule = Rule.objects.get(key="co-burst")
    admin_page = client.get(reverse("admin:rules_rule_change", args=[rule.pk])).content.decode()

    said = "Pending change orders: 3 change orders, at least 3"
    compared = "Cost to date $120,000.00 is above Income to date $100,000.00"
    for shown in (page, text, html, api["summary"]):
        assert said in shown
        assert "Custom.co_pending_30d" not in shown and "Co pending 30d" not in shown
    for shown in (page, text, html):
        assert compared in shown
    assert "Income to date ($100,000.00)" in page and "($100,000)" not in page
    assert "custom.co_pending_30d (Pending change orders) = 3 change orders" in traced
    assert "custom.co_pending_30d (Pending change orders) at least 3" in admin_page
    from apps.rules.authoring.editor import catalogue_data

    picked = catalogue_data()["facts"]["custom.co_pending_30d"]["label"]
    assert picked.startswith("custom.co_pending_30d — Pending change orders: count of change orders")

    # A new label is a new version, read from then on.
    custom_fact_save(spec=count_pending(label="Pending COs"), actor=ops_manager)
    assert CustomFact.objects.get().label == "Pending COs"
    again = client.get(reverse("escalation-detail", args=[escalation.pk])).content.decode()
    assert "Pending COs: 3 change orders" in again


def test_the_admin_form_saves_the_label_and_the_preview_names_the_fact_by_it(client, ops_manager):
    from django.urls import reverse

    ProjectFactory()
    client.force_login(ops_manager)
    add = reverse("admin:rules_customfact_add")
    previewed = client.post(
        add, form_data(label="Pending <b>change</b> orders", _preview="1")
    ).content.decode()
    assert "Pending &lt;b&gt;change&lt;/b&gt; orders (custom.co_pending_30d)" in previewed
    assert client.post(add, form_data(label="Pending change orders")).status_code == 302
    fact = CustomFact.objects.get()
    assert fact.label == fact.current.spec["label"] == "Pending change orders"
    listing = client.get(reverse("admin:rules_customfact_changelist")).content.decode()
    assert "Pending change orders" in listing
    found = client.get(reverse("admin:rules_customfact_changelist"), {"q": "pending change"})
    assert "custom.co_pending_30d" in found.content.decode()  # searched by its label
    change = client.get(reverse("admin:rules_customfact_change", args=[fact.pk])).content.decode()
    assert 'value="Pending change orders"' in change
    unlabelled = client.post(add, form_data(key="co_all", filters="")).status_code
    assert unlabelled == 302 and CustomFact.objects.get(key="co_all").label == "Co all"
