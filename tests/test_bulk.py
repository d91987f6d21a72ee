"""COPY inserts for the hot paths: the rows ``bulk_create`` would write, with their keys, or nothing."""

from __future__ import annotations

import datetime as dt
import gc
import threading
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.bulk import copy_insert, copy_rows, fewer_collections, reserve_ids
from apps.connectors.models import Connection
from apps.escalations.models import Delivery, EscalationEvent
from apps.escalations.tests.helpers import make_escalation

pytestmark = pytest.mark.django_db


def _deliveries(escalation, prefix: str, now: dt.datetime | None = None) -> list[Delivery]:
    now = now or timezone.now()
    return [
        Delivery(
            escalation_id=escalation.pk,
            action="email_account_manager",
            target=f"person{i}@example.test",
            idempotency_key=f"{prefix}{i}",
            next_attempt_at=now + dt.timedelta(minutes=i),
            created_at=now,
            response={"note": "ünïcode ≥ 50,000", "n": [1, 2.5, None]} if i == 1 else {},
        )
        for i in range(3)
    ]


def test_copy_writes_the_rows_bulk_create_writes_with_keys_in_order():
    escalation = make_escalation()
    now = timezone.now()
    copied = copy_insert(_deliveries(escalation, "copy-", now))
    created = Delivery.objects.bulk_create(_deliveries(escalation, "orm-", now))
    assert [d.pk for d in copied] == sorted(d.pk for d in copied)
    assert all(not d._state.adding for d in copied)

    def stored(rows: list[Delivery], prefix: str) -> list[dict]:
        out = []
        for row in Delivery.objects.filter(pk__in=[d.pk for d in rows]).order_by("pk"):
            fields = model_to_dict(row, exclude=["id"])
            fields["idempotency_key"] = fields["idempotency_key"].removeprefix(prefix)
            out.append(fields)
        return out

    assert stored(copied, "copy-") == stored(created, "orm-")
    assert stored(copied, "copy-")[1]["response"] == {"note": "ünïcode ≥ 50,000", "n": [1, 2.5, None]}
    assert stored(copied, "copy-")[0]["state"] == "pending" and stored(copied, "copy-")[0]["attempts"] == 0


def test_json_that_bulk_create_cannot_encode_is_refused_too():
    escalation = make_escalation()
    event = EscalationEvent(
        escalation_id=escalation.pk,
        kind="noted",
        actor="system",
        via="system",
        data={"amount": Decimal("60000.10")},  # no encoder on this field: not JSON
        created_at=timezone.now(),
    )
    with pytest.raises(TypeError, match="Decimal"), transaction.atomic():
        EscalationEvent.objects.bulk_create([event])
    with pytest.raises(TypeError, match="Decimal"), transaction.atomic():
        copy_insert([event])
    assert not EscalationEvent.objects.exists() and event.pk is None


def test_a_violation_raises_and_writes_nothing_of_the_batch():
    escalation = make_escalation()
    copy_insert(_deliveries(escalation, "dup-")[:1])
    with pytest.raises(IntegrityError), transaction.atomic():
        copy_insert(_deliveries(escalation, "dup-"))  # the first row's key is taken
    assert Delivery.objects.filter(idempotency_key__startswith="dup-").count() == 1


@pytest.mark.parametrize(("model", "reason"), [(AuditEntry, "JSONTextField"), (Connection, "auto_now")])
def test_fields_with_their_own_conversion_are_refused(model, reason):
    """A custom field (the audit's canonical text) or one that fills itself on save would be written
    without its conversion: refused before anything is sent."""
    with pytest.raises(TypeError, match=reason):
        copy_insert([model()])
    assert not model.objects.exists()


def test_reserved_ids_come_in_order_and_are_not_reused():
    first = reserve_ids("escalations_delivery", 3)
    second = reserve_ids("escalations_delivery", 2)
    assert first == sorted(first) and len(set(first + second)) == 5 and min(second) > max(first)
    assert reserve_ids("escalations_delivery", 0) == []


def test_large_json_columns_are_lz4_compressed_where_the_server_has_it():
    columns = {
        ("rules_decision", "facts"),
        ("rules_decision", "explanation"),
        ("rules_contextsnapshot", "values"),
        ("escalations_escalation", "evidence"),
        ("escalations_escalation", "opened_evidence"),
        ("audit_auditentry", "data"),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        [supported] = cursor.fetchone()
        cursor.execute(
            "SELECT attrelid::regclass::text, attname, attcompression FROM pg_attribute "
            "WHERE attrelid::regclass::text = ANY(%s) AND attnum > 0",
            [sorted({table for table, _ in columns})],
        )
        methods = {(table, name): method for table, name, method in cursor.fetchall()}
    assert {key: methods[key] for key in columns} == dict.fromkeys(columns, "l" if supported else "")
    assert methods[("rules_decision", "summary")] == ""  # only the large ones


def test_first_run_tables_index_only_what_is_read():
    """Every row a first run inserts pays for each index of its table: the outbox's key has one index (its
    unique constraint, not a second one for LIKE), and a subject state's ``snoozed_by`` is indexed only
    where it is set."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE tablename = ANY(%s)",
            [["escalations_delivery", "rules_subjectstate"]],
        )
        indexes = cursor.fetchall()
    key = [d for table, d in indexes if table == "escalations_delivery" and "(idempotency_key" in d]
    assert key == [
        "CREATE UNIQUE INDEX delivery_idempotency_key ON public.escalations_delivery USING btree "
        "(idempotency_key)"
    ]
    snoozed = [d for table, d in indexes if table == "rules_subjectstate" and "snoozed_by_id" in d]
    assert len(snoozed) == 1 and snoozed[0].endswith("WHERE (snoozed_by_id IS NOT NULL)")
    escalation = make_escalation()
    Delivery.objects.bulk_create(_deliveries(escalation, "k"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Delivery.objects.bulk_create(_deliveries(escalation, "k")[:1])


def test_a_decision_as_wide_as_a_match_keeps_its_facts_in_its_row():
    """A matched decision's row passes the default 2,032-byte TOAST threshold by a little; the table's
    ``toast_tuple_target`` keeps such a row whole, in its page (compressed until it fits 2,600 bytes;
    incompressible here), instead of moving its facts to the TOAST table. A row past the target still
    goes there."""
    import random

    from apps.rules.models import Decision, Rule, RuleVersion

    now = timezone.now()
    rng = random.Random(5)
    rule = Rule.objects.create(key="wide", name="Wide", subject_type="change_order", draft={})
    version = RuleVersion.objects.create(rule=rule, number=1, spec={}, spec_hash="x", published_at=now)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = %s", [Decision._meta.db_table]
        )
        [toast] = cursor.fetchone()

    def chunks() -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {toast}")  # noqa: S608 (a name from the catalogue)
            return cursor.fetchone()[0]

    def stored(width: int) -> tuple[int, int]:
        """The row's width (its values as stored, an out-of-line one fetched back), and the TOAST chunks
        storing it added."""
        # Random hex: lz4 cannot shrink it much, so the row is about as wide as its text.
        facts = {f"fact{i}": f"{rng.getrandbits(256):064x}" for i in range(width)}
        before = chunks()
        decision = Decision.objects.create(
            rule_version=version, subject_type="change_order", subject_id=width, outcome="matched",
            trigger="manual", evaluated_at=now, facts=facts, explanation={"explanation": []}, summary="wide",
        )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_column_size(d.*) FROM rules_decision d WHERE d.id = %s", [decision.pk])
            return cursor.fetchone()[0], chunks() - before

    row, added = stored(30)
    assert added == 0
    assert 2032 < row < 2600  # past the default threshold, kept whole
    _row, added = stored(40)
    assert added > 0  # past the target: the facts moved out of the row


def test_rows_given_as_mappings_take_the_field_defaults_they_leave_out():
    escalation = make_escalation()
    now = timezone.now()
    rows = [
        {
            "escalation_id": escalation.pk,
            "action": "flag_dashboard",
            "target": "dashboard",
            "idempotency_key": f"row-{i}",
            "next_attempt_at": now,
            "created_at": now,
        }
        for i in range(2)
    ]
    ids = copy_rows(Delivery, rows)
    assert ids == sorted(ids) and len(ids) == 2
    stored = Delivery.objects.get(pk=ids[1])
    assert stored.idempotency_key == "row-1" and stored.escalation_id == escalation.pk
    assert (stored.state, stored.attempts, stored.response, stored.last_error) == ("pending", 0, {}, "")
    assert stored.claimed_until is None and stored.delivered_at is None
    assert copy_rows(Delivery, []) == []


def test_fewer_collections_raises_the_thresholds_and_the_last_user_restores_them():
    before = gc.get_threshold()
    entered = threading.Barrier(2)
    leave = threading.Event()
    seen: list[tuple[int, int, int]] = []

    def other_user() -> None:
        with fewer_collections():
            entered.wait()
            leave.wait()

    thread = threading.Thread(target=other_user)
    thread.start()
    with fewer_collections(threshold=40_000):
        entered.wait()
        with fewer_collections():  # nested in the same thread
            seen.append(gc.get_threshold())
    seen.append(gc.get_threshold())  # the other thread is still inside
    leave.set()
    thread.join()
    assert seen[0][0] >= 40_000 and seen[1] == seen[0]
    assert gc.get_threshold() == before


@pytest.mark.parametrize("listened", [False, True], ids=["without __init__", "with an init listener"])
def test_a_stored_instance_is_the_one_init_builds(listened):
    """``stored_maker`` (the audit's entries, the rules' matched decisions): every field loaded, nothing
    deferred to a query, not "adding", the same values as the ordinary constructor; a model with an init
    listener is built through ``__init__``, so the listener sees it."""
    from django.db.models.signals import post_init

    from apps.bulk import stored_maker
    from apps.rules.models import Decision, RuleVersion

    seen = []

    def listener(sender, instance, **kwargs):
        seen.append(instance)

    at = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    values = {
        "id": 11, "subject_type": "change_order", "subject_id": 5, "outcome": "matched", "trigger": "manual",
        "evaluated_at": at, "facts": {"a": 1}, "explanation": {"b": 2}, "summary": "s", "suppressed": "",
    }  # fmt: skip
    if listened:
        post_init.connect(listener, sender=Decision)
    try:
        made = stored_maker(Decision, "default")(rule_version_id=7, escalation_id=None, **values)
    finally:
        post_init.disconnect(listener, sender=Decision)
    built = Decision(rule_version=RuleVersion(pk=7, number=3), **values)
    assert seen == ([made] if listened else [])
    assert made.get_deferred_fields() == set()
    assert not made._state.adding and made._state.db == "default"
    for f in Decision._meta.concrete_fields:
        assert getattr(made, f.attname) == getattr(built, f.attname), f.attname
