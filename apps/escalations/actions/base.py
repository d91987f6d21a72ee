"""The action base class and the registry it fills: one class per outbox action.

A subclass that sets ``name`` registers itself (a family base that leaves ``name`` unset does not).
Everything the outbox needs to carry an action lives on its class: its words, whom or what it reaches
(``targets``), how it is performed, whether it reaches a person (then the noise controls apply, ``noise.py``,
and it runs on the ``delivery`` queue) and its noise policy (``digest_period``, ``bypasses_quiet_hours``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..models import Delivery, Escalation

if TYPE_CHECKING:
    from ..preferences import Preferences

REGISTRY: dict[str, Action] = {}


class Action:
    """One outbox action. ``perform`` delivers one ``Delivery`` row and must be idempotent on its
    ``idempotency_key``; it raises :class:`apps.errors.Permanent` for what a retry cannot fix,
    :class:`apps.errors.Transient` (or ``OSError``) for what it can."""

    name: ClassVar[str]
    words: ClassVar[str]
    # A rule may name it (``actions:`` of a rule); the rest are sent by policies, people's decisions, digests.
    rule_action: ClassVar[bool] = False
    # An email to a person: it passes the noise controls and counts against the person's hourly cap.
    reaches_person: ClassVar[bool] = False
    # Vendor and customer endpoints run on ``writeback`` (its own worker pool in the Procfile), everything
    # else on ``delivery``: a slow or rate-limited upstream never holds the slot an email needs.
    queue: ClassVar[str] = "delivery"
    # A policy level's target (``PolicyLevel.Target``) this action serves, if any.
    policy_target: ClassVar[str | None] = None
    # An action done by queuing it (nothing leaves Fulcrum, nothing is left to do): its row is inserted
    # delivered, with this response, and no worker takes it. None: a worker performs it.
    done_when_queued: ClassVar[dict[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in REGISTRY:
                raise TypeError(f"action {cls.name!r} is defined twice")
            REGISTRY[cls.name] = cls()

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        """Where this action goes for each escalation (addresses or upstream record references): at most one
        query for all of them. The escalations' clients (with owners) and projects are read from the
        instances, so a batch loads them beforehand."""
        return [[] for _ in escalations]

    def level_targets(self, escalation: Escalation, level: dict[str, Any]) -> list[str]:
        """Where a policy level (its frozen snapshot) sends this action."""
        return self.targets([escalation])[0]

    def target_words(self, target: str, escalation: Escalation | None) -> str:
        """Whom or what one target is, in words."""
        return target

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        raise NotImplementedError

    # ---- noise policy (only asked of actions that reach a person) ----

    def digest_period(self, escalation: Escalation, person: Preferences, new: bool) -> dt.timedelta | None:
        """The digest period this notice waits for, or None when it goes out on its own. New escalations
        (not critical ones: they are worth their own email) are batched for a person with a digest."""
        if not new or escalation.severity == Escalation.Severity.CRITICAL:
            return None
        return person.digest or None

    def bypasses_quiet_hours(self, escalation: Escalation) -> bool:
        return False
