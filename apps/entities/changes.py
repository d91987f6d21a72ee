"""Entities changed: the one place a write to entities is announced, after its links are derived.

Every writer (a sync, a webhook, a CSV import, a bulk operation, entity resolution) ends the same way:
derive the links its rows take part in (:func:`apps.entities.linking.link_entities`), then tell whoever
reads entities which ids changed. That idiom is :func:`entities_changed_publish`; the readers subscribe to
the :data:`entities_changed` signal in their ``AppConfig.ready()`` (rules mark the dependent subjects for
evaluation; data quality notes that a scan is due before the next decision). Entities import neither.

A writer that publishes more than once in one transaction (a webhook whose merge publishes too, a batch of
webhook deliveries) wraps the transaction's body in :func:`entities_changes_collected`: the signal is then
sent once, with every change, so the rules mark the transaction's subjects in one ordered insert. Two
transactions each marking in several inserts, in different orders, deadlocked on those rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterable, Iterator, Mapping

from django.dispatch import Signal

from .linking import link_entities

# Sent in the writer's transaction with ``changes`` ({entity key: ids}, only non-empty sets), ``trigger``
# (sync | webhook | resolution ...) and ``since``: when the oldest of the changes reached Fulcrum (a
# webhook's arrival), or None. Receivers do their part in that transaction.
entities_changed = Signal()

# Per thread, as Django's database connections are: the collecting scopes open in this thread, innermost last.
_scopes = threading.local()


def _collecting() -> list[dict[str, set[int]]]:
    stack: list[dict[str, set[int]]] | None = getattr(_scopes, "stack", None)
    if stack is None:
        stack = _scopes.stack = []
    return stack


def _merge_into(target: dict[str, set[int]], changes: Mapping[str, Iterable[int]]) -> None:
    for key, ids in changes.items():
        if ids:
            target.setdefault(key, set()).update(ids)


@contextlib.contextmanager
def entities_changes_collected(
    *, trigger: str, since: dt.datetime | None = None
) -> Iterator[dict[str, set[int]]]:
    """Within (inside the writer's transaction): :func:`entities_changed_publish` links at once but keeps
    its changes; at the end :data:`entities_changed` is sent once with all of them, under ``trigger``
    (a merge published inside a webhook's transaction is marked as the webhook's).

    Nested (a savepoint per item of a batch): the inner scope's changes join the enclosing one when it
    ends normally and are dropped when it ends with an exception (its savepoint is rolled back with them).
    Yields the changes collected so far. ``since`` (the outermost scope's) is sent with them.
    """
    stack = _collecting()
    collected: dict[str, set[int]] = {}
    stack.append(collected)
    try:
        yield collected
    finally:
        popped = stack.pop()
        assert popped is collected, "entities_changes_collected scopes must nest"
    if stack:
        _merge_into(stack[-1], collected)
    elif collected:
        entities_changed.send(
            sender=entities_changed_publish, changes=collected, trigger=trigger, since=since
        )


def entities_changed_publish(
    changes: dict[str, set[int]],
    *,
    trigger: str,
    link: bool = True,
    touched: Mapping[str, Iterable[int]] | None = None,
) -> dict[str, set[int]]:
    """Link what the change touched (``link``; adds the ids linking changed to ``changes``), then send
    :data:`entities_changed` with every non-empty change set; returns what was sent.

    ``touched``: passed to :func:`link_entities` (an incremental sync links only around its own rows).
    """
    if link and changes:
        link_entities(changes, touched=touched)
    # The caller's sets, not copies (receivers only read them): a full sync's hold hundreds of thousands.
    sent = {key: ids for key, ids in changes.items() if ids}
    if stack := _collecting():
        _merge_into(stack[-1], sent)  # sent when the outermost scope ends
    elif sent:
        entities_changed.send(sender=entities_changed_publish, changes=sent, trigger=trigger)
    return sent
