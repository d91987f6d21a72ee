"""An executive route for a subject suppresses a standard one whatever the priority numbers, on the
per-event path and on the bulk-run path alike; and a snooze needs a reason (form and database)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from apps.escalations.models import Escalation
from apps.rules.evaluation.services import evaluate_subjects, rules_import
from apps.rules.models import Decision, Rule, SubjectState

from .test_services import fresh_streams, risky_change_order, rule_yaml

pytestmark = pytest.mark.django_db


def _import(exec_priority: int, std_priority: int) -> None:
    rules_import(text=rule_yaml(key="exec-rule", route="executive", priority=exec_priority), actor="t")
    rules_import(text=rule_yaml(key="std-rule", route="standard", priority=std_priority), actor="t")


def _opened_routes() -> list[tuple[int, str]]:
    return sorted(Escalation.objects.values_list("subject_id", "rule__key"))


@pytest.mark.parametrize(("exec_priority", "std_priority"), [(10, 5), (10, 50), (7, 7)])
@pytest.mark.parametrize("path", ["per_event", "bulk"])
def test_an_executive_match_suppresses_a_standard_one_whatever_the_priorities(
    exec_priority, std_priority, path
):
    fresh_streams()
    cos = [risky_change_order(), risky_change_order(amount="70000")]
    _import(exec_priority, std_priority)
    ids = [co.pk for co in cos] if path == "per_event" else None  # None: the SQL-first bulk run
    report = evaluate_subjects(subject_type="change_order", ids=ids)
    assert report.escalations_opened == 2 and report.suppressed == 2
    assert _opened_routes() == sorted((co.pk, "exec-rule") for co in cos)
    for decision in Decision.objects.filter(rule_version__rule__key="std-rule"):
        assert decision.outcome == "matched"
        assert decision.suppressed == "suppressed by higher route rule exec-rule"
        assert decision.escalation_id is None


def test_a_standard_rule_alone_still_opens():
    fresh_streams()
    co = risky_change_order()
    _import(10, 5)
    Rule.objects.filter(key="exec-rule").update(enabled=False)
    assert evaluate_subjects(subject_type="change_order", ids=[co.pk]).escalations_opened == 1
    assert _opened_routes() == [(co.pk, "std-rule")]


# --- a snooze needs a reason ---------------------------------------------------------------------


def _state(**snooze) -> SubjectState:
    rules_import(text=rule_yaml(), actor="t")
    return SubjectState.objects.create(
        rule=Rule.objects.get(),
        subject_type="change_order",
        subject_id=1,
        last_outcome="matched",
        last_evaluated_at=timezone.now(),
        **snooze,
    )


@pytest.mark.parametrize("reason", ["", "   "])
def test_the_database_refuses_a_snooze_without_a_reason(reason):
    until = timezone.now() + dt.timedelta(days=1)
    with pytest.raises(IntegrityError, match="snooze_needs_a_reason"), transaction.atomic():
        _state(snoozed_until=until, snooze_reason=reason)
    state = _state()  # no snooze, no reason: fine
    with pytest.raises(IntegrityError), transaction.atomic():
        SubjectState.objects.filter(pk=state.pk).update(snoozed_until=until)
    SubjectState.objects.filter(pk=state.pk).update(snoozed_until=until, snooze_reason="waiting on client")


def test_the_admin_form_asks_for_the_reason_and_saves_nothing_without_it(client, ops_manager):
    state = _state()
    client.force_login(ops_manager)
    url = reverse("admin:rules_subjectstate_change", args=[state.pk])
    until = (timezone.localtime() + dt.timedelta(days=2)).strftime("%Y-%m-%d")
    data = {"snoozed_until_0": until, "snoozed_until_1": "09:00:00", "snooze_reason": "  "}
    response = client.post(url, data)
    assert response.status_code == 200 and "A snooze needs a reason" in response.content.decode()
    state.refresh_from_db()
    assert state.snoozed_until is None
    response = client.post(url, {**data, "snooze_reason": "client meeting on Friday"})
    assert response.status_code == 302
    state.refresh_from_db()
    assert state.snoozed_until is not None and state.snooze_reason == "client meeting on Friday"
    assert state.snoozed_by == ops_manager
