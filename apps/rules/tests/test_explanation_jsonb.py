"""A decision's trace reaches its row as the same jsonb value whichever encoder wrote it."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection

from apps.rules.evaluation.services import explanation_jsonb


def _stored(trace: dict[str, Any]) -> Any:
    """The value PostgreSQL holds for ``trace`` written the way decision rows are (binary jsonb)."""
    field = explanation_jsonb(trace)
    with connection.cursor() as cursor:
        cursor.cursor.execute("SELECT (%b::jsonb)::text", [field])
        return json.loads(cursor.fetchone()[0])


def _as_before(trace: dict[str, Any]) -> Any:
    """The value of the text the standard library's encoder wrote until now."""
    return json.loads(json.dumps(trace, cls=DjangoJSONEncoder, separators=(",", ":")))


TRACES = [
    {
        "outcome": "matched",
        "summary": "Change order amount $56,233.85 is at least $50,000.00 — Küche, 日本",
        "explanation": [
            {"op": "gte", "actual": Decimal("56233.85"), "expected": Decimal("50000"), "depth": 1},
            {"op": "is", "actual": True, "expected": None, "result": "true"},
            {"op": "lt", "actual": 0.000001, "expected": 1e21, "at": dt.date(2026, 12, 7)},
        ],
        "evaluated": dt.datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=dt.UTC),
        "error": "",
    },
    # Past orjson's 64 bits: written by the standard library's encoder instead.
    {"outcome": "matched", "explanation": [{"actual": 2**70, "expected": -(2**65)}]},
    # A key that is not a str: the standard library's encoder writes it as one.
    {"outcome": "not_matched", "explanation": {1: "one"}},
]


@pytest.mark.django_db
@pytest.mark.parametrize("trace", TRACES, ids=["typical", "big-ints", "int-key"])
def test_the_stored_value_is_the_one_the_standard_encoder_wrote(trace: dict[str, Any]) -> None:
    assert _stored(trace) == _as_before(trace)


@pytest.mark.django_db
def test_a_datetime_keeps_djangos_spelling() -> None:
    stored = _stored(TRACES[0])
    assert stored["evaluated"] == "2026-12-07T01:02:03.456Z"


@pytest.mark.django_db
def test_a_float_jsonb_refuses_is_stored_as_null_not_a_failed_batch() -> None:
    assert _stored({"explanation": [{"actual": float("nan"), "expected": float("inf")}]}) == {
        "explanation": [{"actual": None, "expected": None}]
    }
