"""The append path's own text and COPY: the spliced data text is canonical JSON for every shape it takes,
rows travel by binary COPY unchanged, and ids are drawn in chain order from the table's sequence."""

from __future__ import annotations

import enum
import json

import pytest
from django.contrib.auth import get_user_model
from django.db import DataError, connection, transaction

from apps.audit.models import AuditEntry, canonical_json
from apps.audit.services import (
    _COPY_SQL,
    _COPY_TYPES,
    CheckedJSON,
    RawJSON,
    _spliced,
    audit_append_many,
    audit_record,
    audit_record_many,
    audit_verify,
)


class Level(enum.IntEnum):
    HIGH = 3


class Kind(enum.StrEnum):
    MATCHED = "matched"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"only": "one"},
        {"b": 1, "a": "x", "c": None},  # written out in sorted order, not in the dict's
        {"z": True, "y": False, "x": -12, "w": 0},
        {"summary": '≥ 50,000 — é \u2028 "quoted" \\ tab\t', "ünï": "ç"},
        {"level": Level.HIGH, "kind": Kind.MATCHED},
        {"facts": RawJSON(canonical_json({"b": {"value": "1.50"}, "a": [1, None]})), "rule": "r"},
    ],
)
def test_spliced_text_is_canonical_json(data):
    plain = {k: (json.loads(v) if isinstance(v, RawJSON) else v) for k, v in data.items()}
    assert _spliced(data) == (canonical_json(plain), type(data.get("facts")) is not RawJSON)


@pytest.mark.parametrize(
    ("data", "checked"),
    [
        ({}, True),
        ({"summary": "mentions a token in a value"}, True),  # values are not keys
        ({"facts": CheckedJSON('{"a":{"value":1}}'), "rule": "r"}, True),
        ({"facts": RawJSON('{"a":{"value":1}}'), "rule": "r"}, False),  # its keys are unknown
        ({"facts": CheckedJSON('{"a":{"value":1}}'), "api_Token": "x"}, False),
        ({"to\u212aen": "x"}, False),  # the Kelvin sign lower-cases to k
    ],
)
def test_spliced_says_whether_every_key_is_known_to_be_clean(data, checked):
    assert _spliced(data)[1] is checked


def test_spliced_gives_up_on_other_values_and_keys():
    assert _spliced({"amount": 1.5}) is None
    assert _spliced({"nested": {"a": 1}}) is None
    assert _spliced({1: "a"}) is None


@pytest.mark.django_db
def test_text_outside_ascii_and_a_user_actor_survive_binary_copy():
    user = get_user_model().objects.create_user("zoë")
    odd = "décision ≥ 50 000 — 日本 \U0001f600"
    audit_append_many(
        [{"action": f"test.{odd}", "object_type": "thing ü", "object_id": odd[:60], "data": {odd: odd}}],
        actor=user,
    )
    stored = AuditEntry.objects.get()
    assert (stored.actor, stored.actor_user_id, stored.action, stored.object_type, stored.object_id) == (
        "user:zoë",
        user.pk,
        f"test.{odd}",
        "thing ü",
        odd[:60],
    )
    assert stored.data == {odd: odd}
    assert stored.compute_hash() == stored.hash
    assert audit_verify().ok


@pytest.mark.django_db
def test_a_nul_character_is_refused_and_nothing_is_written():
    with pytest.raises(DataError):
        audit_record(action="test.\x00")
    assert not AuditEntry.objects.exists()
    assert audit_record(action="test.after").prev_hash == "0" * 64
    assert audit_verify().ok


@pytest.mark.django_db
def test_ids_follow_the_sequence_in_chain_order_across_a_gap():
    first = audit_record_many([{"action": "test.a"}, {"action": "test.b"}])
    with connection.cursor() as cursor:  # ids drawn elsewhere and never used (a rolled-back append)
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('audit_auditentry', 'id'), %s)", [first[-1].pk + 40]
        )
    with transaction.atomic():
        second = audit_record_many([{"action": f"test.{n}"} for n in range(5)])
    ids = [e.pk for e in first + second]
    assert ids[2] == ids[1] + 41 and ids[2:] == list(range(ids[2], ids[2] + 5))
    assert list(AuditEntry.objects.values_list("id", flat=True)) == ids
    with connection.cursor() as cursor:  # the sequence moved past every id handed out
        cursor.execute("SELECT nextval(pg_get_serial_sequence('audit_auditentry', 'id'))")
        assert cursor.fetchone()[0] == ids[-1] + 1
    report = audit_verify()
    assert report.ok and report.checked == 7


@pytest.mark.django_db
def test_binary_copy_types_are_the_columns_types():
    # Binary COPY sends each value in its type's wire format: a column whose type changed (a bigint user
    # id) would refuse the rows, so the declared types must follow the table.
    names = [c.strip() for c in _COPY_SQL.split("(")[1].split(")")[0].split(",")]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
            "WHERE attrelid = 'audit_auditentry'::regclass AND attnum > 0 AND NOT attisdropped"
        )
        columns = dict(cursor.fetchall())
    wire = {"bigint": "int8", "integer": "int4", "text": "text", "character varying": "text",
            "timestamp with time zone": "timestamptz"}  # fmt: skip
    assert [wire[columns[name]] for name in names] == list(_COPY_TYPES)
