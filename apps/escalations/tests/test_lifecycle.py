from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation
from apps.escalations.services import (
    TransitionError,
    escalation_acknowledge,
    escalation_decide,
    escalation_dismiss,
    escalation_resolve,
)

from .helpers import make_escalation

pytestmark = pytest.mark.django_db


def test_account_manager_acknowledges_then_resolves_with_an_outcome(account_manager):
    escalation = make_escalation(owner_user=account_manager, route="standard")
    escalation_acknowledge(escalation=escalation, actor=account_manager, via="web", note="on it")
    escalation = escalation_resolve(
        escalation=escalation, actor=account_manager, outcome="actioned", via="api"
    )
    assert escalation.status == "resolved" and escalation.outcome == "actioned"
    assert escalation.acknowledged_at and escalation.closed_at
    events = list(escalation.events.values_list("kind", "actor", "via", "note"))
    assert events == [("acknowledged", "maria", "web", "on it"), ("resolved", "maria", "api", "")]
    assert list(AuditEntry.objects.filter(object_type="escalation").values_list("action", flat=True)) == [
        "escalation.acknowledged",
        "escalation.resolved",
    ]


def test_closed_escalations_cannot_change_again(account_manager):
    escalation = make_escalation(owner_user=account_manager, route="standard")
    escalation_dismiss(escalation=escalation, actor=account_manager, outcome="false_alarm")
    with pytest.raises(TransitionError, match="already dismissed"):
        escalation_resolve(escalation=escalation, actor=account_manager, outcome="actioned")
    with pytest.raises(TransitionError, match="only open"):
        escalation_acknowledge(escalation=escalation, actor=account_manager)


def test_people_cannot_set_auto_resolved_or_unknown_outcomes(executive):
    escalation = make_escalation()
    for outcome in ("auto_resolved", "maybe"):
        with pytest.raises(TransitionError):
            escalation_resolve(escalation=escalation, actor=executive, outcome=outcome)
    assert Escalation.objects.get(pk=escalation.pk).status == "open"


def test_an_account_manager_cannot_act_on_another_managers_escalation(account_manager, other_account_manager):
    escalation = make_escalation(owner_user=account_manager)
    with pytest.raises(PermissionDenied):
        escalation_acknowledge(escalation=escalation, actor=other_account_manager)
    assert Escalation.objects.get(pk=escalation.pk).status == "open"


def test_only_executives_decide_executive_approvals(executive, account_manager):
    escalation = make_escalation(owner_user=account_manager)
    with pytest.raises(PermissionDenied):
        escalation_decide(escalation=escalation, actor=account_manager, approve=True)
    decided = escalation_decide(escalation=escalation, actor=executive, approve=False, note="too risky")
    assert (decided.status, decided.outcome) == ("resolved", "rejected")


def test_standard_route_items_are_not_approved(executive):
    escalation = make_escalation(route="standard")
    with pytest.raises(TransitionError, match="executive route"):
        escalation_decide(escalation=escalation, actor=executive, approve=True)


def test_visible_to_scopes_account_managers_to_their_clients(
    account_manager, other_account_manager, executive
):
    mine = make_escalation(owner_user=account_manager)
    theirs = make_escalation(owner_user=other_account_manager, client_name="Other Co")
    assert list(Escalation.objects.visible_to(account_manager)) == [mine]
    assert set(Escalation.objects.visible_to(executive)) == {mine, theirs}
