"""The actions a rule may name (apps/rules/engine/ruleset.py ``ACTIONS``, kept in the pure engine) are exactly
the registry's rule actions (``apps/escalations/actions``), and every registered action has what the outbox
needs to carry it out. A name added to the rules' vocabulary without its class would pass validation and
then never be delivered; a class without its name could never be chosen (issue 16, item 2)."""

from __future__ import annotations

import pytest

from apps.escalations import actions
from apps.escalations.actions.base import REGISTRY, Action
from apps.escalations.models import PolicyLevel
from apps.rules.engine.ruleset import ACTIONS


def test_the_names_a_rule_may_use_are_the_registrys_rule_actions() -> None:
    assert len(set(ACTIONS)) == len(ACTIONS)
    assert set(ACTIONS) == actions.rule_action_names()


def test_every_registered_action_has_words_a_performer_and_a_queue() -> None:
    for action in actions.registered():
        assert action.words and action.words != action.name, action.name
        assert type(action).perform is not Action.perform, f"{action.name} cannot be performed"
        assert action.queue in ("delivery", "writeback"), action.name
        if action.reaches_person:  # an email to a person never waits behind a vendor
            assert action.queue == "delivery", action.name


def test_every_rule_action_looks_up_its_targets() -> None:
    """The base class has no targets: a rule action that did not say whom it reaches would be skipped on
    every escalation ("no target")."""
    unhandled = [a.name for a in actions.registered() if a.rule_action and type(a).targets is Action.targets]
    assert not unhandled, f"no targets for {unhandled}"


def test_every_policy_target_has_one_action() -> None:
    for target in PolicyLevel.Target:
        assert actions.for_policy_target(target).reaches_person


def test_defining_an_action_class_registers_it_once() -> None:
    class Probe(Action):
        name = "probe_for_the_registry_test"
        words = "Probe"

    try:
        assert isinstance(actions.get("probe_for_the_registry_test"), Probe)
        assert actions.action_words("probe_for_the_registry_test") == "Probe"
        with pytest.raises(TypeError, match="defined twice"):

            class Again(Action):
                name = "probe_for_the_registry_test"

    finally:
        REGISTRY.pop("probe_for_the_registry_test", None)
