"""The admin rule editor: the form an operations manager fills in instead of writing YAML or JSON."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.rules.authoring.editor import (
    catalogue_data,
    condition_label,
    describe,
    fact_label,
    normalise_tree,
)
from apps.rules.authoring.forms import RuleEditorForm
from apps.rules.engine.catalogue import FACTS, operators_for
from apps.rules.engine.ruleset import parse_rules
from apps.rules.evaluation.services import rule_publish, rules_import
from apps.rules.models import Rule

from .test_preview_admin import rule_yaml

pytestmark = pytest.mark.django_db

TREE = {
    "all": [
        {"fact": "change_order.amount", "op": "gte", "value": "50,000"},
        {"fact": "change_order.status", "op": "in", "value": "pending, approved"},
        {
            "any": [
                {"fact": "client.missed_last_milestone", "op": "is", "value": "true"},
                {"fact": "client.days_to_renewal", "op": "between", "value": ["0", "60"]},
            ]
        },
        {"not": {"fact": "project.schedule_status", "op": "eq", "value": "on_track"}},
    ]
}


def form_data(**overrides):
    data = {
        "key": "co-review",
        "name": "Change order needs review",
        "description": "",
        "subject": "change_order",
        "enabled": "on",
        "when": json.dumps(TREE),
        "route": "executive",
        "severity": "high",
        "priority": "10",
        "actions": ["email_executives", "flag_dashboard"],
        "cooldown": "7d",
        "max_fact_age": "24h",
        "auto_resolve": "on",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


# --- the form -----------------------------------------------------------------------------------------


def test_a_valid_tree_typed_as_text_saves_as_the_canonical_draft(client, ops_manager):
    client.force_login(ops_manager)

    response = client.post(reverse("admin:rules_rule_add"), form_data())

    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = Rule.objects.get(key="co-review")
    assert rule.subject_type == "change_order" and rule.name == "Change order needs review"
    assert rule.live_version is None  # saving a draft publishes nothing
    when = rule.draft["when"]["all"]
    assert when[0] == {"fact": "change_order.amount", "op": "gte", "value": 50000}
    assert when[1]["value"] == ["pending", "approved"]
    assert when[2]["any"][0]["value"] is True
    assert when[2]["any"][1]["value"] == [0, 60]
    assert rule.draft["actions"] == ["email_executives", "flag_dashboard"]
    assert rule.draft["cooldown"] == "7d" and rule.draft["max_fact_age"] == "1d"
    # The same rule written as a rules file reads back to the same draft: admin and import share rules.
    assert parse_rules(_as_yaml(rule.draft))[0].to_dict() == rule.draft
    entry = AuditEntry.objects.get(action="rule.created", object_id="co-review")
    assert entry.data["draft"] == rule.draft


def _as_yaml(draft):
    from apps.rules.engine.ruleset import dump_rules, rule_from_dict

    return dump_rules([rule_from_dict(draft)])


def test_unknown_fact_wrong_operator_and_bad_value_each_get_a_message_on_their_condition():
    tree = {
        "all": [
            {"fact": "change_order.amout", "op": "gte", "value": 1},
            {"fact": "change_order.amount", "op": "contains", "value": "5"},
            {"any": [{"fact": "client.days_to_renewal", "op": "lte", "value": "soon"}]},
            {"fact": "client.missed_last_milestone", "op": "is", "value": "maybe"},
        ]
    }
    form = RuleEditorForm(data=form_data(when=json.dumps(tree)))

    assert not form.is_valid()
    messages = form.errors["when"]
    assert any(
        m.startswith("Condition all #1 (change_order.amout): fact:")
        and "did you mean 'change_order.amount'" in m
        for m in messages
    ), messages
    assert any(
        m.startswith("Condition all #2 (change_order.amount): op:") and "'contains' does not apply" in m
        for m in messages
    ), messages
    assert any(
        m.startswith("Condition all #3 › any #1 (client.days_to_renewal): value:") and "whole number" in m
        for m in messages
    ), messages
    assert any(m.startswith("Condition all #4 (client.missed_last_milestone): value:") for m in messages)
    assert len(messages) == 4
    # The script gets the same problems keyed by the condition's path, to show them in place.
    errors = form.fields["when"].widget.errors_by_path
    assert set(errors) == {"when.all[0]", "when.all[1]", "when.all[2].any[0]", "when.all[3]"}


def test_a_fact_the_subject_cannot_see_is_refused_on_its_condition():
    tree = {"all": [{"fact": "change_order.amount", "op": "gte", "value": 1}]}
    form = RuleEditorForm(data=form_data(subject="client", when=json.dumps(tree)))

    assert not form.is_valid()
    assert "not available to a client rule" in form.errors["when"][0]


def test_bad_durations_priority_and_json_are_reported_on_their_fields():
    form = RuleEditorForm(
        data=form_data(cooldown="7 days", max_fact_age="0h", priority="-1", when='{"all": [')
    )

    assert not form.is_valid()
    assert "is not a duration" in form.errors["cooldown"][0]
    assert "more than zero" in form.errors["max_fact_age"][0]
    assert "priority" in form.errors
    assert "not valid JSON" in form.errors["when"][0]


def test_between_needs_two_ordered_values_and_in_a_non_empty_list():
    tree = {
        "all": [
            {"fact": "change_order.amount", "op": "between", "value": ["100", "10"]},
            {"fact": "change_order.status", "op": "in", "value": ""},
        ]
    }
    form = RuleEditorForm(data=form_data(when=json.dumps(tree)))

    assert not form.is_valid()
    text = " ".join(form.errors["when"])
    assert "low ≤ high" in text and "non-empty list" in text


def test_operators_offered_follow_the_fact_type():
    data = catalogue_data()
    assert data["operators"]["bool"] == ["is", "eq", "ne", "is_null"]
    assert "contains" in data["operators"]["text"] and "between" not in data["operators"]["text"]
    assert "between" in data["operators"]["money"] and "contains" not in data["operators"]["money"]
    for name, fact in FACTS.items():
        assert data["facts"][name]["operators"] == list(operators_for(fact.type))
    assert fact_label(FACTS["change_order.amount"]) == (
        "change_order.amount — the change order's total (money, USD)"
    )


def test_form_values_become_typed_values_and_junk_is_left_for_validation():
    tree = {
        "all": [
            {"fact": "change_order.age_days", "op": "gt", "value": " 30 "},
            {"fact": "change_order.amount", "op": "lt", "value": "$1,250.50"},
            {"fact": "project.margin_pct", "op": "not_in", "value": "5, 7.5"},
            {"fact": "submittal.schedule_critical", "op": "eq", "value": "yes"},
            {"fact": "change_order.age_days", "op": "gt", "value": "thirty"},
            {"fact": "change_order.status", "op": "contains", "value": " pend "},
        ]
    }
    leaves = normalise_tree(tree)["all"]
    assert [leaf["value"] for leaf in leaves] == [30, "1250.50", ["5", "7.5"], True, "thirty", " pend "]


def test_a_problem_path_names_its_condition_in_words():
    assert condition_label(TREE, "when.all[2].any[1].value[0]") == (
        "all #3 › any #2 (client.days_to_renewal)",
        "value[0]",
    )
    assert condition_label(TREE, "when.all[3].not.op") == ("all #4 › not (project.schedule_status)", "op")
    assert (
        condition_label({"fact": "change_order.amount"}, "when.value")[0]
        == "the top condition (change_order.amount)"
    )


# --- the admin pages ----------------------------------------------------------------------------------


def test_change_page_renders_the_editor_with_fact_descriptions(client, ops_manager):
    rules_import(text=rule_yaml(), actor="system:test")
    rule = Rule.objects.get(key="big-co")
    client.force_login(ops_manager)

    response = client.get(reverse("admin:rules_rule_change", args=[rule.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert '<optgroup label="project">' in page and '<optgroup label="vendor">' in page
    assert "change_order.age_days — days since it was created (whole number, days)" in page
    assert 'data-type="percent"' in page
    # Without the script the condition is still readable and editable as JSON.
    assert '<textarea name="when"' in page
    assert "change_order.amount at least 50000 USD" in page
    assert 'id="rule-catalogue" type="application/json"' in page
    assert "rules/condition_editor.js" in page
    assert "<script>" not in page.split("<body")[1]  # no inline script (CSP default-src 'self')


def test_saving_the_form_unchanged_keeps_the_draft_and_publishes_nothing_new(client, ops_manager):
    rules_import(text=rule_yaml(), actor="system:test")
    rule = Rule.objects.get(key="big-co")
    before = rule.draft
    client.force_login(ops_manager)
    form = client.get(reverse("admin:rules_rule_change", args=[rule.pk])).context["adminform"].form
    posted = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if field.disabled:
            continue
        if isinstance(value, bool):
            if value:
                posted[name] = "on"
        elif value is not None:
            posted[name] = value
    posted.update({"versions-TOTAL_FORMS": "1", "versions-INITIAL_FORMS": "1"})

    response = client.post(reverse("admin:rules_rule_change", args=[rule.pk]), posted)

    assert response.status_code == 302, response.context["adminform"].form.errors
    rule.refresh_from_db()
    assert rule.draft == before
    assert rule_publish(rule=rule, actor="system:test").number == 1


def test_executive_views_rules_but_cannot_change_them(client, executive):
    rules_import(text=rule_yaml(), actor="system:test")
    rule = Rule.objects.get(key="big-co")
    executive.is_staff = True  # the group grants view permissions; entering admin also needs staff
    executive.save()
    client.force_login(executive)
    url = reverse("admin:rules_rule_change", args=[rule.pk])

    page = client.get(url)

    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert "change_order.amount at least 50000 USD" in page.content.decode()
    assert client.post(url, form_data(key="big-co")).status_code == 403
    assert client.get(reverse("admin:rules_rule_add")).status_code == 403
    rule.refresh_from_db()
    assert rule.draft["name"] == "Big change order on a thin margin"


def test_rules_changelist_query_count_does_not_grow_with_rules(
    client, ops_manager, django_assert_max_num_queries
):
    client.force_login(ops_manager)
    rules_import(text=rule_yaml(key="r-0"), actor="system:test")
    url = reverse("admin:rules_rule_changelist")
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    rules_import(text="".join(rule_yaml(key=f"r-{i}") for i in range(1, 15)), actor="system:test")
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(url)
    assert response.status_code == 200 and response.context["cl"].result_count == 15


def test_describe_reads_a_tree_aloud():
    lines = describe(TREE)
    assert lines[0] == (0, "all of:")
    assert (1, "change_order.amount at least 50,000 USD") in lines
    assert (2, "client.days_to_renewal between 0 days and 60 days") in lines
    assert (1, "not:") in lines


def test_a_bad_duration_does_not_hide_the_condition_problems():
    tree = {"all": [{"fact": "change_order.amount", "op": "gte", "value": "lots"}]}
    form = RuleEditorForm(data=form_data(cooldown="soon", when=json.dumps(tree)))

    assert not form.is_valid()
    assert "is not a duration" in form.errors["cooldown"][0]
    assert len(form.errors["cooldown"]) == 1
    assert form.errors["when"][0].startswith("Condition all #1 (change_order.amount): value:")


def test_draft_filter_finds_unpublished_changed_and_shadowed_rules(client, ops_manager):
    rules_import(text=rule_yaml(key="same") + rule_yaml(key="changed"), actor="system:test")
    changed = Rule.objects.get(key="changed")
    changed.draft = {**changed.draft, "severity": "low", "key": "changed"}
    changed.shadow_since = changed.updated_at
    changed.save()
    Rule.objects.create(key="fresh", name="Fresh", subject_type="change_order", draft={})
    client.force_login(ops_manager)
    url = reverse("admin:rules_rule_changelist")

    def keys(value):
        response = client.get(url, {"draft": value})
        return sorted(rule.key for rule in response.context["cl"].result_list)

    assert keys("unpublished") == ["fresh"]
    assert keys("changed") == ["changed"]
    assert keys("same") == ["same"]
    assert keys("shadow") == ["changed"]


# --- the editor's script, in headless Chromium ------------------------------------------------------------


@pytest.fixture
def chromium_page(transactional_db, live_server):
    # The database fixture first, so the session-scoped live server (and its connection) stops before
    # the test database is dropped.
    import os

    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is not installed (Debian package chromium)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop runs in this thread
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--headless=new"]
        )
        context = browser.new_context(base_url=live_server.url)
        page = context.new_page()
        page.errors = []
        # Console errors (a CSP violation, a script error) and failed loads other than the favicon.
        page.on(
            "console",
            lambda m: (
                page.errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                page.errors.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        yield page
        browser.close()


def _sign_in(page, user):
    from django.conf import settings
    from django.test import Client

    session = Client()
    session.force_login(user)
    cookie = session.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": page.url_base}])


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_script_builds_a_nested_rule_with_operators_per_type(chromium_page, live_server):
    from django.contrib.auth.models import Group

    from apps.accounts.roles import OPERATIONS
    from tests.factories import UserFactory

    user = UserFactory(username="olivia", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATIONS))
    page = chromium_page
    page.url_base = live_server.url
    _sign_in(page, user)
    page.goto("/admin/rules/rule/add/")
    assert page.is_visible(".rule-tree") and not page.is_visible("#id_when")

    page.fill("#id_key", "made-in-the-browser")
    page.fill("#id_name", "Made in the browser")
    page.locator(".rule-leaf input").first.fill("75000")
    page.locator(".rule-group-head button", has_text="+ group").first.click()
    nested = page.locator(".rule-leaf").nth(1)
    nested.locator("select.rule-fact").select_option("client.missed_last_milestone")
    options = nested.locator("select.rule-op option").evaluate_all("os => os.map(o => o.value)")
    assert options == list(operators_for("bool"))
    assert "the most recently due milestone" in nested.locator(".rule-help").inner_text()
    page.locator(".rule-group-head button", has_text="+ condition").nth(1).click()
    renewal = page.locator(".rule-leaf").nth(2)
    renewal.locator("select.rule-fact").select_option("client.days_to_renewal")
    renewal.locator("select.rule-op").select_option("between")
    renewal.locator(".rule-value input").nth(0).fill("0")
    renewal.locator(".rule-value input").nth(1).fill("60")
    submittal = page.locator(".rule-leaf").first.locator("option[value='submittal.revision']")
    assert submittal.is_disabled()  # a change order rule cannot see submittal facts
    page.locator("input[name=_save]").click()
    page.wait_for_load_state()

    rule = Rule.objects.get(key="made-in-the-browser")
    assert rule.draft["when"] == {
        "all": [
            {"fact": "change_order.amount", "op": "gte", "value": 75000},
            {
                "any": [
                    {"fact": "client.missed_last_milestone", "op": "is", "value": True},
                    {"fact": "client.days_to_renewal", "op": "between", "value": [0, 60]},
                ]
            },
        ]
    }
    assert page.errors == []
