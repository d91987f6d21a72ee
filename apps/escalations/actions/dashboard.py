"""The dashboard flag: the escalation shows on the dashboard; nothing leaves Fulcrum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..models import FLAG_ACTION, Delivery, Escalation
from .base import Action


class FlagDashboard(Action):
    name = FLAG_ACTION  # the querysets of flagged projects read rule versions by this name
    words = "Flag on the dashboard"
    rule_action = True

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        return [["dashboard"] for _ in escalations]

    def target_words(self, target: str, escalation: Escalation | None) -> str:
        project = getattr(escalation, "project", None)
        return f"{project.number} {project.name}".strip() if project is not None else target

    # The flag is the open escalation itself (``EscalationQuerySet.flagging``): it shows from the commit
    # that opened it, so its row is delivered then; a first run of 50 rules handed ~590 tasks of flag rows
    # to the workers for nothing.
    done_when_queued = {"flagged": True}

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        """A row queued pending (before rows were inserted delivered, or replayed) is delivered as is."""
        return dict(self.done_when_queued)
