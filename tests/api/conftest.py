"""API test helpers: a token client per persona and small builders for escalations, rules, decisions."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.entities.models import SourceObject
from apps.escalations.models import Escalation
from apps.rules.models import Decision, Rule, RuleVersion
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    CrmOwnerFactory,
    ProjectFactory,
)

PERSONAS = [
    "ops_manager",
    "executive",
    "administrator",
    "account_manager",
    "other_account_manager",
    "outsider",
]
_keys = itertools.count(1)


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # Throttle counters live in the cache, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


def token_client(user) -> APIClient:
    api = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api


@pytest.fixture
def as_persona(db, request):
    """``as_persona("executive")`` → an APIClient authenticated by that persona's token."""

    def make(name: str) -> APIClient:
        return token_client(request.getfixturevalue(name))

    return make


def make_rule(*, route: str = "executive", subject: str = "change_order") -> RuleVersion:
    """A published rule version whose actions include flag_dashboard (what flags a project)."""
    key = f"api-rule-{next(_keys)}"
    spec = {
        "key": key,
        "name": f"Rule {key}",
        "subject": subject,
        "route": route,
        "severity": "high",
        "actions": ["email_account_manager", "flag_dashboard"],
    }
    rule = Rule.objects.create(key=key, name=spec["name"], subject_type=subject, draft=spec)
    version = RuleVersion.objects.create(
        rule=rule, number=1, spec=spec, spec_hash=key, published_at=timezone.now()
    )
    Rule.objects.filter(pk=rule.pk).update(live_version=version)
    return version


def make_client(owner_user=None, **extra):
    owner = CrmOwnerFactory(user=owner_user, email=owner_user.email if owner_user else "nobody@example.test")
    return ClientFactory(owner=owner, **extra)


def make_escalation(
    *,
    client=None,
    project=None,
    version: RuleVersion | None = None,
    route: str = "executive",
    severity: str = "high",
    status: str = Escalation.Status.OPEN,
    subject_type: str = "change_order",
) -> Escalation:
    """An escalation on a fresh change order of ``project`` (or of a new project of ``client``)."""
    client = client or (project.client if project else make_client())
    project = project or ProjectFactory(client=client)
    version = version or make_rule(route=route, subject=subject_type)
    subject_id = ChangeOrderFactory(project=project, amount=Decimal("60000.00")).pk
    if subject_type == "project":
        subject_id = project.pk
    now = timezone.now()
    return Escalation.objects.create(
        rule=version.rule,
        rule_version=version,
        subject_type=subject_type,
        subject_id=subject_id,
        subject_label=f"{subject_type} {subject_id}",
        client=client,
        project=project,
        route=route,
        severity=severity,
        priority=10,
        status=status,
        outcome="actioned" if status == Escalation.Status.RESOLVED else "",
        summary="change_order.amount 60,000.00 ≥ 50,000.00",
        evidence={"facts": {"change_order.amount": {"value": "60000.00", "age_s": 60}}, "explanation": []},
        opened_at=now - dt.timedelta(minutes=5),
        last_fired_at=now - dt.timedelta(minutes=5),
    )


def make_decision(version: RuleVersion, subject_type: str, subject_id: int, outcome: str = "matched"):
    return Decision.objects.create(
        rule_version=version,
        subject_type=subject_type,
        subject_id=subject_id,
        outcome=outcome,
        trigger=Decision.Trigger.SYNC,
        evaluated_at=timezone.now(),
        facts={"change_order.amount": {"value": "60000.00", "age_s": 60}},
        explanation=[],
        summary="matched",
    )


def link(entity, *, slug: str = "books", object_type: str = "customer", external_id: str = "QB-1"):
    """A crosswalk row: ``entity`` as another system (QuickBooks by default) knows it."""
    connection = ConnectionFactory(slug=slug, kind="quickbooks")
    now = timezone.now()
    return SourceObject.objects.create(
        connection=connection,
        object_type=object_type,
        external_id=external_id,
        name=str(entity),
        client=entity if object_type == "customer" else None,
        project=entity if object_type == "job" else None,
        source_updated_at=now,
        content_hash="0" * 32,
        synced_at=now,
    )
