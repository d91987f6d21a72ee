from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.audit.export import export_rows, period, verify_jsonl
from apps.audit.models import AuditEntry
from apps.audit.services import audit_record, audit_record_many, audit_verify

pytestmark = pytest.mark.django_db

CHICAGO = dt.timezone(dt.timedelta(hours=-6))  # America/Chicago in winter (TIME_ZONE)


def _at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, tzinfo=CHICAGO)


def _record_on(day: int, n: int, hour: int = 12) -> list[AuditEntry]:
    with time_machine.travel(_at(day, hour), tick=False):
        return audit_record_many(
            [
                {"action": "test.event", "object_type": "thing", "object_id": f"{day}-{i}",
                 "data": {"day": day, "i": i, "note": "naïve café ✓", "amount": Decimal("12.50")}}
                for i in range(n)
            ],
            actor="system:test",
        )  # fmt: skip


@pytest.fixture
def three_days():
    return {day: _record_on(day, 3) for day in (1, 2, 3)}


def test_export_writes_one_verifiable_line_per_entry(three_days, tmp_path, capsys):
    out = tmp_path / "audit-2026-01-02.jsonl"
    call_command("export_audit", "--since", "2026-01-02", "--until", "2026-01-02", "--output", str(out))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first) == [
        "id", "created_at", "actor", "action", "object_type", "object_id", "data", "prev_hash", "hash"
    ]  # fmt: skip
    entry = three_days[2][0]
    assert first["id"] == entry.pk and first["hash"] == entry.hash
    assert first["prev_hash"] == three_days[1][-1].hash  # links to the day before
    assert first["data"] == {"day": 2, "i": 0, "note": "naïve café ✓", "amount": "12.50"}
    assert f"exported 3 audit entries (#{entry.pk}–#{three_days[2][-1].pk})" in capsys.readouterr().err
    with out.open(encoding="utf-8") as handle:
        report = verify_jsonl(handle)
    assert report.ok and report.checked == 3


def test_export_to_standard_output_and_open_ended(three_days):
    out = io.StringIO()
    call_command("export_audit", "--since", "2026-01-02", stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e.pk for day in (2, 3) for e in three_days[day]]
    assert verify_jsonl(lines).ok


def test_a_tampered_export_fails_verification(three_days, tmp_path):
    out = tmp_path / "audit.jsonl"
    call_command("export_audit", "--since", "2026-01-01", "--output", str(out), stderr=io.StringIO())
    lines = out.read_text(encoding="utf-8").splitlines()
    assert verify_jsonl(lines).checked == 9

    edited = json.loads(lines[4])
    edited["data"]["i"] = 99
    report = verify_jsonl([*lines[:4], json.dumps(edited), *lines[5:]])
    assert not report.ok and report.broken_id == edited["id"] and "content" in report.reason

    dropped = verify_jsonl(lines[:4] + lines[5:])
    assert not dropped.ok and dropped.broken_id == json.loads(lines[5])["id"]
    assert "previous hash" in dropped.reason

    assert "line 2" in verify_jsonl([lines[0], "{not json"]).reason


def test_datetime_bounds_and_bad_input(three_days):
    window = period("2026-01-02T00:00", "2026-01-02T12:00:00-06:00")  # inclusive upper datetime
    assert [r["id"] for r in export_rows(window)] == [e.pk for e in three_days[2]]
    assert [r["id"] for r in export_rows(period("2026-01-03T12:00:01"))] == []
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_audit", "--since", "yesterday")
    with pytest.raises(CommandError, match="before"):
        call_command("export_audit", "--since", "2026-01-03", "--until", "2026-01-02")


def test_exported_created_at_is_what_was_hashed(db):
    with time_machine.travel(dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.UTC), tick=False):
        whole_second = audit_record(action="test.event", data={"x": 1})  # no microseconds in isoformat
    [line] = export_rows(period("2026-01-05"))
    assert line["created_at"] == "2026-01-05T09:30:00+00:00"
    assert line["hash"] == whole_second.hash
    assert verify_jsonl([json.dumps(line)]).ok
    assert audit_verify().ok


# The append path builds the hashed text without model instances; it must agree with compute_hash().


def text(n: int) -> st.SearchStrategy[str]:
    """What PostgreSQL can store: no NUL, no lone surrogates."""
    return st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=n)


json_leaves = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | text(12)
    | st.floats(allow_nan=False, allow_infinity=False)
)  # fmt: skip
json_data = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text(8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(text(10), json_data, max_size=5), action=text(20), object_id=text(20))
def test_appended_entries_hash_as_compute_hash_and_read_back_equal(db, data, action, object_id):
    [entry] = audit_record_many(
        [{"action": action, "object_id": object_id, "data": data}], actor="system:prop"
    )
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert stored.data == entry.data
    assert (stored.action, stored.object_id, stored.hash) == (action, object_id, entry.hash)
    assert stored.compute_hash() == stored.hash
    assert audit_verify().ok


def test_floats_postgres_rewrites_still_verify(db):
    entry = audit_record(
        action="test.floats", data={"big": 1e16, "huge": -2.5e300, "neg0": -0.0, "small": 1e-7}
    )
    assert entry.data == {"big": 10**16, "huge": int(-2.5e300), "neg0": 0.0, "small": 1e-7}
    assert AuditEntry.objects.get(pk=entry.pk).data == entry.data
    assert audit_verify().ok


def test_redaction_takes_the_careful_path_when_a_secret_word_appears_anywhere(db):
    entry = audit_record(
        action="test.redact",
        data={"Api_TOKEN": "x", "note": "mentions a password in a value", "to\u212aen": "kelvin-k key"},
    )
    assert entry.data == {
        "Api_TOKEN": "[redacted]",
        "note": "mentions a password in a value",
        "to\u212aen": "[redacted]",
    }
    assert audit_verify().ok


def test_an_escaped_character_that_lower_cases_into_a_secret_word_is_redacted(db):
    # The key's text shows "to\\u212aen": no secret word, yet it lower-cases to "token".
    entry = audit_record(action="test.redact", data={"nested": [{"to\u212aen": "kelvin-k key"}]})
    assert entry.data == {"nested": [{"to\u212aen": "[redacted]"}]}


def test_other_escaped_text_stays_on_the_fast_path(db, monkeypatch):
    def careful(data):
        raise AssertionError("redaction walk taken")

    monkeypatch.setattr("apps.audit.services._redact", careful)
    data = {"summary": "amount 60,000.00 \u2265 50,000.00 for Café Zoë"}
    assert audit_record(action="test.fast", data=data).data == data
    # A key of the data itself is checked as the string it is: İ (which lower-cases to i + a combining
    # dot) spells no secret word, whatever its escape looks like.
    data["İ"] = "dotted capital i"
    assert audit_record(action="test.fast", data=data).data == data
    # Deeper, only the text is scanned, and the escape of a letter-like character sends it the careful way.
    with pytest.raises(AssertionError, match="redaction walk"):
        audit_record(action="test.fast", data={"nested": [{"İ": "dotted capital i"}]})


def test_non_string_keys_are_refused(db):
    with pytest.raises(TypeError, match="keys must be strings"):
        audit_record(action="test.keys", data={"ok": {10: "a", 9: "b"}})
    assert not AuditEntry.objects.exists()


def test_awkward_text_survives_copy(db):
    odd = 'tab\there\nnew\\line\r"quoted" \\N'
    entry = audit_record(
        action=odd, object_type="t\\y", object_id=odd[:60], actor=f"system:{odd}", data={odd: odd}
    )
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert (stored.action, stored.object_type, stored.actor, stored.data) == (
        odd,
        "t\\y",
        f"system:{odd}",
        {odd: odd},
    )
    assert audit_verify().ok


def test_export_is_a_stream(three_days):
    assert timezone.is_aware(period("2026-01-01").since)
    rows = export_rows(period("2026-01-01"), chunk_size=2)
    assert next(rows)["id"] == three_days[1][0].pk  # rows arrive before the query is exhausted


def test_database_errors_surface_as_django_errors_and_leave_the_transaction_usable(db):
    from django.db import DataError

    with pytest.raises(DataError):
        audit_record(action="x" * 81)  # action is varchar(80)
    assert audit_record(action="test.after").prev_hash == "0" * 64
    assert audit_verify().ok


@pytest.mark.parametrize("with_init_listener", [False, True])
def test_returned_entries_are_like_loaded_ones(administrator, with_init_listener):
    from django.db.models.signals import post_init

    seen = []

    def listener(sender, instance, **kwargs):
        seen.append(instance)

    if with_init_listener:
        post_init.connect(listener, sender=AuditEntry)
    try:
        entry = audit_record(action="test.loaded", actor=administrator, data={"a": [1, "b"]})
    finally:
        post_init.disconnect(listener, sender=AuditEntry)
    assert bool(seen) == with_init_listener
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert entry == stored and not entry._state.adding and entry._state.db == "default"
    assert entry.actor_user == administrator and entry.get_deferred_fields() == set()
    fields = [f.attname for f in AuditEntry._meta.concrete_fields]
    assert [getattr(entry, f) for f in fields] == [getattr(stored, f) for f in fields]
