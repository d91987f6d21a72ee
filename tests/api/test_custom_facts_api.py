"""Rules on operator-defined facts (and fact-vs-fact conditions) through the API: published, evaluated,
and refused with the reason when they name a custom fact that does not exist."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.utils import timezone

from apps.escalations.models import Escalation
from apps.orchestration.pipeline import publish_run_perform
from apps.rules.engine.ruleset import parse_rules
from apps.rules.evaluation.custom import custom_fact_save
from apps.rules.evaluation.services import rules_import
from apps.rules.models import Rule
from apps.rules.tests.test_services import fresh_streams, rule_yaml
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    ProjectFactory,
)

WHEN = {
    "all": [
        {"fact": "custom.co_pending_30d", "op": "gte", "value": 2},
        {"fact": "project.cost_to_date", "op": "gt", "other": "project.income_to_date"},
    ]
}
SPEC = {
    "key": "co_pending_30d", "subject": "project", "type": "int", "unit": "count", "kind": "aggregate",
    "related": "change_orders", "function": "count", "window": "30d",
    "filters": [{"field": "status", "op": "eq", "value": "pending"}],
}  # fmt: skip


def _project(pending: int, cost: str) -> int:
    project = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory()))
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal("1000"))
    FinancialLineFactory(project=project, kind="bill", amount=Decimal(cost))
    for _ in range(pending):
        ChangeOrderFactory(
            project=project, status="pending", created_upstream_at=timezone.now() - dt.timedelta(days=1)
        )
    return project.pk


def _draft(when: dict) -> dict:
    spec = parse_rules(rule_yaml(key="burst"))[0].to_dict()
    return {**spec, "subject": "project", "when": when}


def test_a_rule_on_a_custom_fact_publishes_and_escalates_through_the_api(as_persona, ops_manager):
    fresh_streams()
    custom_fact_save(spec=SPEC, actor=ops_manager)
    hit, few, cheap = _project(3, "1500"), _project(1, "1500"), _project(3, "500")
    rules_import(text=rule_yaml(key="burst", amount=900000), actor="system:test")
    Rule.objects.filter(key="burst").update(draft=_draft(WHEN), subject_type="project")

    response = as_persona("ops_manager").post("/api/rules/burst/publish/")

    assert response.status_code == 200, response.json()
    publish_run_perform(run_id=response.json()["evaluation_run"])
    opened = Escalation.objects.filter(rule__key="burst")
    assert list(opened.values_list("subject_id", flat=True)) == [hit]
    assert few != hit != cheap
    listed = as_persona("ops_manager").get("/api/rules/burst/").json()
    assert "custom.co_pending_30d" in str(listed)


def test_a_rule_naming_an_unknown_custom_fact_is_a_400_with_the_reason(as_persona):
    fresh_streams()
    rules_import(text=rule_yaml(key="burst", amount=900000), actor="system:test")
    when = {"fact": "custom.nope", "op": "gte", "value": 2}
    Rule.objects.filter(key="burst").update(draft=_draft(when), subject_type="project")

    response = as_persona("ops_manager").post("/api/rules/burst/publish/")

    assert response.status_code == 400
    assert "unknown fact 'custom.nope'" in str(response.json())
