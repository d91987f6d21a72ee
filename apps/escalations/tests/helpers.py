"""Building an escalation directly, for tests of what happens after a rule matched."""

from __future__ import annotations

from django.utils import timezone

from apps.escalations.models import Escalation
from apps.rules.models import Rule, RuleVersion
from tests.factories import ChangeOrderFactory, ClientFactory, CrmOwnerFactory, ProjectFactory

SPEC = {
    "key": "co-exec-review",
    "name": "Change order needs executive judgment",
    "subject": "change_order",
    "when": {"all": [{"fact": "change_order.amount", "op": "gte", "value": "50000"}]},
    "route": "executive",
    "severity": "high",
    "priority": 10,
    "actions": ["email_account_manager"],
    "cooldown": "7d",
    "max_fact_age": "24h",
}


def make_escalation(
    *, owner_user=None, route="executive", client_name="Harborview Medical Partners", **extra
):
    rule, _ = Rule.objects.get_or_create(
        key=SPEC["key"], defaults={"name": SPEC["name"], "subject_type": "change_order", "draft": SPEC}
    )
    version, _ = RuleVersion.objects.get_or_create(
        rule=rule, number=1, defaults={"spec": SPEC, "spec_hash": "x", "published_at": timezone.now()}
    )
    owner = CrmOwnerFactory(email=owner_user.email if owner_user else "someone@example.test", user=owner_user)
    client = ClientFactory(name=client_name, owner=owner)
    co = ChangeOrderFactory(project=ProjectFactory(client=client))
    now = timezone.now()
    return Escalation.objects.create(
        rule=rule,
        rule_version=version,
        subject_type="change_order",
        subject_id=co.pk,
        subject_label=f"CO {co.number} on {co.project}",
        client=client,
        project=co.project,
        route=route,
        severity="high",
        priority=10,
        summary="change_order.amount 60,000.00 ≥ 50,000.00",
        evidence={
            "facts": {},
            "explanation": [
                {
                    "path": "when.all[0]",
                    "fact": "change_order.amount",
                    "op": "gte",
                    "expected": "50000",
                    "actual": "60000.00",
                    "result": "true",
                    "reason": "",
                    "text": "change_order.amount is 60,000.00 USD, at least 50,000.00 USD — true",
                }
            ],
        },
        opened_at=now,
        last_fired_at=now,
        **extra,
    )


def escalations_wipe() -> None:
    """Delete every escalation in a test, as only the database owner could: the event log is append-only
    (its trigger is switched off for the statement, like the audit tests' ``_as_superuser``)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE waits for no deferred FK check
        cursor.execute("ALTER TABLE escalations_escalationevent DISABLE TRIGGER escalation_event_append_only")
        cursor.execute("DELETE FROM escalations_escalationevent")
        cursor.execute("ALTER TABLE escalations_escalationevent ENABLE TRIGGER escalation_event_append_only")
        # Back to the schema's own timing for the rest of the test (every deferrable constraint is
        # INITIALLY DEFERRED): the pipeline stores decisions pointing at escalations it inserts later.
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    Escalation.objects.all().delete()
