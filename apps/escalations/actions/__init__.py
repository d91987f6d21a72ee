"""Outbox actions, one class each, in one registry (``base.REGISTRY``).

Adding an action is adding a module here with an :class:`~.base.Action` subclass (every module of this
package is imported below, and a subclass that sets ``name`` registers itself); a rule may name it once its
name is also in ``ACTIONS`` of ``apps/rules/engine/ruleset.py`` (the engine stays pure), which
``apps/escalations/tests/test_action_names.py`` holds equal to the registry's rule actions.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from typing import Any

from apps.errors import Permanent

from ..models import Escalation
from .base import REGISTRY, Action

__all__ = [
    "Action",
    "action_words",
    "find",
    "for_policy_target",
    "get",
    "no_target_words",
    "queue_for",
    "registered",
    "rule_action_names",
    "target_words",
    "targets_for",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def registered() -> list[Action]:
    return list(REGISTRY.values())


def find(name: object) -> Action | None:
    return REGISTRY.get(str(name or ""))


def get(name: str) -> Action:
    """The action called ``name``; an unknown name is a permanent failure of the row that carries it."""
    action = REGISTRY.get(name)
    if action is None:
        raise Permanent(f"unknown action {name!r}")
    return action


def rule_action_names() -> set[str]:
    return {a.name for a in REGISTRY.values() if a.rule_action}


def reaches_person_names() -> frozenset[str]:
    return frozenset(a.name for a in REGISTRY.values() if a.reaches_person)


def for_policy_target(target: str) -> Action:
    """The action a policy level's target (``PolicyLevel.Target``) sends its emails as."""
    [action] = [a for a in REGISTRY.values() if a.policy_target == target]
    return action


def targets_for(name: str, escalations: Sequence[Escalation]) -> list[list[str]]:
    """The action's targets per escalation; an unknown name (a rule saved before its action was removed)
    has none, so the action is skipped."""
    action = find(name)
    return action.targets(escalations) if action else [[] for _ in escalations]


def queue_for(name: str) -> str:
    action = find(name)
    return action.queue if action else "delivery"


def no_target_words(name: object) -> str:
    """Why an action was skipped, as the escalation's timeline says it: ``Email to the account manager: no
    one to send it to``, ``Note in CRM: no record to write it to``."""
    action = find(name)
    why = "no one to send it to" if action is None or action.reaches_person else "no record to write it to"
    return f"{action_words(name)}: {why}"


def action_words(name: object) -> str:
    """``note_crm`` → ``Note in CRM``."""
    action = find(name)
    return action.words if action else str(name or "").replace("_", " ").capitalize()


def target_words(name: object, target: object, escalation: Any = None) -> str:
    """Whom or what an outbox row reaches, in words (``note_crm → 1:5100145159`` says nothing to a person;
    ``Note in CRM → Acme Builders`` does)."""
    action = find(name)
    return action.target_words(str(target or ""), escalation) if action else str(target or "")
