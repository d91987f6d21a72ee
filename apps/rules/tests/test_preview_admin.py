"""The admin preview of a draft and the confirmation step before publishing a wide-reaching one."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.rules.authoring.preview import preview_draft
from apps.rules.engine.ruleset import parse_rules
from apps.rules.evaluation.services import rules_import
from apps.rules.models import Rule, RulesSettings

# The backtest tests' rule and change orders: previews and backtests are checked on the same data.
from apps.rules.tests.test_backtest import change_order, fresh_streams, rule_yaml

pytestmark = pytest.mark.django_db


def draft_for(amount):
    return parse_rules(rule_yaml(amount=amount))[0].to_dict()


@pytest.fixture
def company():
    """Four change orders on 9% margins: the live rule (≥ 50,000) matches ``big`` and ``huge``; ``mid``
    matches only a draft at ≥ 10,000; ``no_income`` has no margin, so it is insufficient data."""
    fresh_streams()
    rules_import(text=rule_yaml(), actor="system:test")
    return {
        "rule": Rule.objects.get(key="big-co"),
        "big": change_order("60000"),
        "huge": change_order("90000"),
        "mid": change_order("20000"),
        "no_income": change_order("70000", margin_income=None),
    }


def set_threshold(value):
    RulesSettings.objects.update_or_create(pk=1, defaults={"publish_confirm_threshold": value})


def test_preview_page_shows_the_numbers_of_preview_draft(client, ops_manager, company):
    rule = company["rule"]
    rule.draft = draft_for(10000)
    rule.save()
    client.force_login(ops_manager)

    response = client.get(reverse("admin:rules_rule_preview", args=[rule.pk]))

    assert response.status_code == 200
    expected = preview_draft(Rule.objects.get(pk=rule.pk))
    shown = response.context["result"]
    assert (shown.subjects, shown.counts, shown.live_counts) == (
        expected.subjects,
        expected.counts,
        expected.live_counts,
    )
    assert (shown.new, shown.gone, shown.new_count, shown.gone_count) == (
        expected.new,
        expected.gone,
        expected.new_count,
        expected.gone_count,
    )
    assert sorted(shown.samples) == sorted(expected.samples)
    # Independent of preview_draft: the data was built so that these are the answers.
    assert shown.matches == 3 and shown.live_matches == 2
    assert shown.new == [company["mid"].pk] and shown.gone_count == 0
    page = response.content.decode()
    for key in ("big", "huge", "mid"):
        assert reverse("admin:entities_changeorder_change", args=[company[key].pk]) in page
    assert f'<strong class="rule-matches">{expected.matches}</strong>' in page


def test_preview_of_an_invalid_draft_goes_back_with_the_problem(client, ops_manager, company):
    rule = company["rule"]
    rule.draft = {**rule.draft, "when": {"fact": "change_order.amount", "op": "contains", "value": 1}}
    rule.save()
    client.force_login(ops_manager)

    response = client.get(reverse("admin:rules_rule_preview", args=[rule.pk]), follow=True)

    assert response.redirect_chain[-1][0] == reverse("admin:rules_rule_change", args=[rule.pk])
    assert "not a valid rule" in response.content.decode()


def test_publish_above_the_threshold_needs_the_confirmation(client, ops_manager, company):
    rule = company["rule"]
    rule.draft = draft_for(10000)  # newly matches one change order
    rule.save()
    set_threshold(0)
    client.force_login(ops_manager)
    url = reverse("admin:rules_rule_publish", args=[rule.pk])

    asked = client.post(url, {})

    assert asked.status_code == 200 and asked.context["confirm"] is True
    assert 'name="confirm"' in asked.content.decode()
    rule.refresh_from_db()
    assert rule.live_version.number == 1 and rule.versions.count() == 1

    confirmed = client.post(url, {"confirm": "yes"})

    assert confirmed.status_code == 302
    rule.refresh_from_db()
    assert rule.live_version.number == 2 and rule.live_version.spec == draft_for(10000)


def test_publish_within_the_threshold_goes_through_at_once(client, ops_manager, company):
    rule = company["rule"]
    rule.draft = draft_for(10000)
    rule.save()
    set_threshold(1)
    client.force_login(ops_manager)

    response = client.post(reverse("admin:rules_rule_publish", args=[rule.pk]), {})

    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.live_version.number == 2


def test_publish_action_on_the_changelist_asks_first_then_publishes(client, ops_manager, company):
    rule = company["rule"]
    rule.draft = draft_for(10000)
    rule.save()
    set_threshold(0)
    client.force_login(ops_manager)
    url = reverse("admin:rules_rule_changelist")
    chosen = {"action": "publish", "_selected_action": [rule.pk]}

    asked = client.post(url, chosen)

    assert asked.status_code == 200
    assert "admin/rules/rule/publish_confirmation.html" in [t.name for t in asked.templates]
    assert Rule.objects.get(pk=rule.pk).live_version.number == 1

    done = client.post(url, {**chosen, "confirm": "yes"})

    assert done.status_code == 302
    assert Rule.objects.get(pk=rule.pk).live_version.number == 2


def test_executive_can_preview_but_not_publish(client, executive, company):
    executive.is_staff = True  # the role's group has view permissions; admin also needs staff
    executive.save()
    rule = company["rule"]
    client.force_login(executive)

    assert client.get(reverse("admin:rules_rule_preview", args=[rule.pk])).status_code == 200
    assert (
        client.post(reverse("admin:rules_rule_publish", args=[rule.pk]), {"confirm": "yes"}).status_code
        == 403
    )
    assert Rule.objects.get(pk=rule.pk).versions.count() == 1


def test_administrator_sets_the_threshold_that_publishing_uses(client, administrator, ops_manager, company):
    client.force_login(administrator)
    assert (
        client.post(reverse("admin:rules_rulessettings_add"), {"publish_confirm_threshold": "0"}).status_code
        == 302
    )
    assert RulesSettings.load().publish_confirm_threshold == 0
    assert client.get(reverse("admin:rules_rulessettings_add")).status_code == 403  # one row only
    rule = company["rule"]
    rule.draft = draft_for(10000)
    rule.save()
    client.force_login(ops_manager)

    response = client.get(reverse("admin:rules_rule_publish", args=[rule.pk]))

    assert response.context["threshold"] == 0 and response.context["confirm"] is True
