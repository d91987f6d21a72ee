"""Entities changed: the one place a write to entities is announced, after its links are derived.

Every writer (a sync, a webhook, a CSV import, a bulk operation, entity resolution) ends the same way:
derive the links its rows take part in (:func:`apps.entities.linking.link_entities`), then tell whoever
reads entities which ids changed. That idiom is :func:`entities_changed_publish`; the readers subscribe to
the :data:`entities_changed` signal in their ``AppConfig.ready()`` (rules mark the dependent subjects for
evaluation; data quality notes that a scan is due before the next decision). Entities import neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.dispatch import Signal

from .linking import link_entities

# Sent in the writer's transaction with ``changes`` ({entity key: ids}, only non-empty sets) and
# ``trigger`` (sync | webhook | resolution ...). Receivers do their part in that transaction.
entities_changed = Signal()


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
    if sent:
        entities_changed.send(sender=entities_changed_publish, changes=sent, trigger=trigger)
    return sent
