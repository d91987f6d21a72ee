"""Every action a rule may name (apps/rules/engine/ruleset.py ``ACTIONS``) has what the outbox needs to carry
it out: a performer (``@performs``), its words, and targets looked up for it. A name added to the rules'
vocabulary without them would pass validation and then never be delivered (issue 16, item 2)."""

from __future__ import annotations

from apps.escalations import delivery, noise, services, words
from apps.rules.engine.ruleset import ACTIONS


def test_every_action_a_rule_may_name_has_a_performer_and_words() -> None:
    assert noise.PERSONAL  # importing noise registers the email and digest performers
    missing = [name for name in ACTIONS if name not in delivery.PERFORMERS]
    assert not missing, f"no @performs for {missing}"
    unworded = [name for name in ACTIONS if name not in words.ACTION_WORDS]
    assert not unworded, f"no words for {unworded}"


def test_every_action_a_rule_may_name_is_looked_up_for_targets() -> None:
    """``actions_targets`` compares the action with each name it serves (its string constants); a name it
    does not compare falls through to "no target", and the action is skipped on every escalation."""
    compared = set(services.actions_targets.__code__.co_consts)
    unhandled = [name for name in ACTIONS if name not in compared]
    assert not unhandled, f"actions_targets has no branch for {unhandled}"
