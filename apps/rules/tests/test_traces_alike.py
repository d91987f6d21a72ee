"""Evaluations alike are traced once per process: the trace and its jsonb are made from ``Evaluation.key``.

The key must hold everything a trace is made from, or a decision would be stored with another's
explanation: each value as it reads (``9.0`` is not ``9.00``, ``1`` is not ``True``), each condition's
own texts, an age when it made the condition stale.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from apps.rules.engine.evaluator import compile_condition
from apps.rules.evaluation import services
from apps.rules.evaluation.services import _traced

WHEN = {
    "all": [
        {"fact": "change_order.amount", "op": "gte", "value": 50000},
        {"fact": "project.margin_pct", "op": "lt", "value": 12},
    ]
}


def _evaluate(condition: Any, amount: object, margin: object, age: float = 60.0) -> Any:
    values = {"change_order.amount": amount, "project.margin_pct": margin}
    ages = dict.fromkeys(values, age)
    return condition.evaluate(values, ages=ages, max_age=timedelta(hours=1))


def test_evaluations_alike_share_one_trace_and_others_get_their_own(monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "_TRACES", {})
    condition = compile_condition(WHEN, "change_order")
    first = _traced(_evaluate(condition, Decimal("60000.00"), Decimal("9.0")))
    again = _traced(_evaluate(condition, Decimal("60000.00"), Decimal("9.0")))
    assert again[0] is first[0] and again[1] is first[1]
    assert first[0] == _evaluate(condition, Decimal("60000.00"), Decimal("9.0")).to_json()

    others = [
        _evaluate(condition, Decimal("60000.00"), Decimal("9.00")),  # equal, but reads 9.00%
        _evaluate(condition, Decimal("60000.00"), Decimal("13")),  # another outcome
        _evaluate(condition, Decimal("60000.00"), None),  # no data
        _evaluate(condition, Decimal("60000.00"), Decimal("9.0"), age=7200.0),  # stale
        _evaluate(condition, Decimal("60000.00"), Decimal("9.0"), age=9000.0),  # staler: another text
        _evaluate(compile_condition(WHEN, "change_order"), Decimal("60000.00"), Decimal("9.0")),
    ]
    made = [_traced(evaluation) for evaluation in others]
    # Another compiled condition, even of the same tree, has its own (its facts may read otherwise).
    assert len({id(trace) for trace, _ in [first, *made]}) == len(made) + 1
    for evaluation, (trace, _jsonb) in zip(others, made, strict=True):
        assert trace == evaluation.to_json()


def test_a_value_without_a_key_is_traced_afresh(monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "_TRACES", {})
    condition = compile_condition({"fact": "change_order.amount", "op": "gte", "value": 1}, "change_order")
    evaluation = condition.evaluate({"change_order.amount": [5]}, ages={"change_order.amount": 1.0})
    assert evaluation.key() is None  # a list: not a value a text is remembered by
    assert _traced(evaluation)[0] is not _traced(evaluation)[0]
    assert not services._TRACES
