"""A decision's facts snapshot written as JSON text is the snapshot itself, whatever the values, and in the
audit chain's canonical form: matched decisions' audit entries take the text as is."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from apps.audit.models import canonical_json
from apps.audit.services import CheckedJSON, RawJSON, _canonical
from apps.rules.engine import customfacts as cf
from apps.rules.engine.catalogue import facts_for
from apps.rules.evaluation.facts import Context

from .test_custom_facts import spec

NAMES = [f.name for f in facts_for("change_order")]
ODD_VALUES = [
    None,
    True,
    False,
    0,
    -7,
    2**70,
    Decimal("9.0000"),
    Decimal("-0.50"),
    Decimal("1E+3"),
    Decimal("NaN"),
    dt.date(2026, 11, 24),
    dt.datetime(2026, 11, 24, 3, 4, 5, tzinfo=dt.UTC),
    1.5,
    "pending",
    'quote " backslash \\ tab \t newline \n',
    "naïve ≥ 12% — ok",
    "",
]


def _as_stored(context: Context) -> object:
    return json.loads(json.dumps(context.snapshot(), cls=DjangoJSONEncoder))


@pytest.mark.parametrize("shift", range(len(ODD_VALUES)))
def test_snapshot_json_is_the_snapshot(shift):
    values = {name: ODD_VALUES[(i + shift) % len(ODD_VALUES)] for i, name in enumerate(NAMES)}
    ages = {name: (None if i % 5 == 0 else 300.0 + i) for i, name in enumerate(NAMES)}
    context = Context("change_order", 1, values, ages)
    assert json.loads(context.snapshot_json()) == _as_stored(context)
    assert context.snapshot_json() == canonical_json(context.snapshot()) == _canonical(context.snapshot())


def test_fragments_follow_the_ages_of_each_context():
    values = {name: 1 for name in NAMES}
    first = Context("change_order", 1, values, {name: 10.0 for name in NAMES})
    second = Context("change_order", 2, values, {name: 20.0 for name in NAMES})
    missing = Context("change_order", 3, values, {})
    for context in (first, second, missing, first):
        assert json.loads(context.snapshot_json()) == _as_stored(context)
        assert context.snapshot_json() == canonical_json(context.snapshot())


def test_values_in_another_order_give_the_same_text():
    # Canonical JSON sorts the fact names, whatever order the context computed them in.
    values = {name: i for i, name in enumerate(NAMES)}
    ages = {name: 5.0 for name in NAMES}
    forward = Context("change_order", 1, values, ages)
    backward = Context("change_order", 1, dict(reversed(values.items())), ages)
    assert forward.snapshot_json() == backward.snapshot_json() == canonical_json(forward.snapshot())


def test_a_snapshot_vouches_for_its_keys_only_when_it_can():
    # The audit writer skips its scan for secret words in a CheckedJSON, so the snapshot may be one only
    # when no key in its text holds a secret word: its fact names are checked, and a value bringing an
    # object of its own (or a brace in a text) makes it a plain RawJSON, which the writer scans.
    ages = {name: 60.0 for name in NAMES}
    plain = Context("change_order", 1, {name: 1 for name in NAMES}, ages).snapshot_json()
    assert type(plain) is CheckedJSON
    for odd in ({"api_token": "x"}, ["a", {"b": 1}], "a {brace} in a text"):
        values = {name: 1 for name in NAMES} | {NAMES[0]: odd}
        snapshot = Context("change_order", 1, values, ages).snapshot_json()
        assert type(snapshot) is RawJSON, odd
        assert snapshot == canonical_json(Context("change_order", 1, values, ages).snapshot())


def test_a_custom_fact_named_like_a_secret_is_not_vouched_for(installed):
    installed(*(cf.parse_definition(spec(key=key)) for key in ("api_token_changes", "changes_30d")))
    names = [f.name for f in facts_for("project")]
    assert {"custom.api_token_changes", "custom.changes_30d"} <= set(names)
    ages = {name: 5.0 for name in names}
    secret = Context("project", 1, {name: 2 for name in names}, ages).snapshot_json()
    assert type(secret) is RawJSON
    assert secret == canonical_json(Context("project", 1, {name: 2 for name in names}, ages).snapshot())
    clean = [name for name in names if name != "custom.api_token_changes"]
    assert type(Context("project", 1, {name: 2 for name in clean}, ages).snapshot_json()) is CheckedJSON
