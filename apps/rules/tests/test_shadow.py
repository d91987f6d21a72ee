"""Shadow mode: a draft evaluated beside the live version over every subject, acting on nothing."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.escalations.models import Delivery, Escalation
from apps.rules.engine.ruleset import RulesFileError, rule_from_dict
from apps.rules.evaluation.services import rules_import
from apps.rules.evaluation.shadow import (
    rule_shadow_start,
    rule_shadow_stop,
    shadow_evaluate,
    shadow_evaluate_task,
)
from apps.rules.evaluation.sql import batch_outcomes
from apps.rules.models import Decision, Rule, ShadowRun, SubjectState

from .test_preview_admin import company, draft_for, rule_yaml  # noqa: F401  (company is a fixture)

pytestmark = pytest.mark.django_db


def acted_rows():
    return (
        Escalation.objects.count(),
        Delivery.objects.count(),
        Decision.objects.count(),
        SubjectState.objects.count(),
    )


def test_shadow_run_stores_the_would_match_counts_and_acts_on_nothing(company):  # noqa: F811
    rule = company["rule"]
    rule.draft = draft_for(10000)
    rule.save()
    rule_shadow_start(rule=rule, actor="system:test")
    before = acted_rows()

    (run,) = shadow_evaluate()

    # Counted independently of the preview code: the SQL batch evaluator on the draft itself.
    outcomes = batch_outcomes(rule_from_dict(rule.draft))
    matched = sorted(sid for sid, outcome in outcomes.items() if outcome == "matched")
    assert matched == sorted(company[k].pk for k in ("big", "huge", "mid"))
    assert run.would_match == len(matched) == 3
    assert run.subjects == 4
    assert run.counts == {"matched": 3, "not_matched": 0, "insufficient_data": 1}
    assert run.live_counts["matched"] == 2 and run.live_version.number == 1
    assert (run.added, run.removed) == (1, 0)
    assert run.added_ids == [company["mid"].pk] and run.removed_ids == []
    assert sorted(run.sample_ids) == matched
    assert run.spec == rule.draft and not run.error
    assert acted_rows() == before == (0, 0, 0, 0)
    assert AuditEntry.objects.filter(action="rule.shadow_run", object_id="big-co").count() == 1


def test_a_draft_that_drops_matches_counts_them_as_removed(company):  # noqa: F811
    rule = company["rule"]
    rule.draft = draft_for(80000)  # keeps huge (90,000), drops big (60,000)
    rule.save()

    (run,) = shadow_evaluate(rules=[rule])

    assert run.would_match == 1 and run.sample_ids == [company["huge"].pk]
    assert (run.added, run.removed, run.removed_ids) == (0, 1, [company["big"].pk])


def test_only_rules_in_shadow_run_and_stopping_ends_it(company):  # noqa: F811
    rules_import(text=rule_yaml(key="quiet"), actor="system:test")
    rule = company["rule"]
    rule_shadow_start(rule=rule, actor="system:test")

    assert [r.rule.key for r in shadow_evaluate()] == ["big-co"]
    rule_shadow_stop(rule=rule, actor="system:test")
    assert shadow_evaluate() == []
    assert ShadowRun.objects.count() == 1
    actions = list(AuditEntry.objects.filter(object_id="big-co").values_list("action", flat=True))
    assert "rule.shadow_started" in actions and "rule.shadow_stopped" in actions


def test_an_invalid_draft_cannot_start_shadow_and_a_later_broken_one_is_recorded(company):  # noqa: F811
    rule = company["rule"]
    broken = {**rule.draft, "when": {"fact": "change_order.amount", "op": "contains", "value": 1}}
    rule.draft = broken
    rule.save()
    with pytest.raises(RulesFileError):
        rule_shadow_start(rule=rule, actor="system:test")
    assert Rule.objects.get(pk=rule.pk).shadow_since is None

    (run,) = shadow_evaluate(rules=[rule])

    assert run.error and run.would_match == 0 and run.subjects == 0


def test_the_nightly_task_runs_every_shadowed_draft(company):  # noqa: F811
    rule = company["rule"]
    rule.draft = draft_for(10000)
    rule.save()
    rule_shadow_start(rule=rule, actor="system:test")

    assert shadow_evaluate_task() == "1 shadow run(s): big-co 3"


def test_admin_shows_the_latest_shadow_summary_and_starts_and_stops_shadow(
    client,
    ops_manager,
    company,  # noqa: F811
):
    rule = company["rule"]
    rule.draft = draft_for(10000)
    rule.save()
    client.force_login(ops_manager)
    shadow_url = reverse("admin:rules_rule_shadow", args=[rule.pk])

    assert client.post(shadow_url, {"do": "start"}).status_code == 302
    assert Rule.objects.get(pk=rule.pk).shadow_since is not None
    assert client.post(shadow_url, {"do": "run"}).status_code == 302

    change_page = client.get(reverse("admin:rules_rule_change", args=[rule.pk])).content.decode()
    assert "would match 3 of 4 (against v1: 1 added, 0 removed)" in change_page
    shadow_page = client.get(shadow_url)
    assert shadow_page.context["latest"].would_match == 3
    assert (
        reverse("admin:entities_changeorder_change", args=[company["mid"].pk]) in shadow_page.content.decode()
    )

    assert client.post(shadow_url, {"do": "stop"}).status_code == 302
    assert Rule.objects.get(pk=rule.pk).shadow_since is None


def test_several_drafts_share_one_evaluation_and_agree_with_preview_draft(company):  # noqa: F811
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from apps.rules.authoring.preview import preview_draft, preview_drafts

    rules_import(text=rule_yaml(key="second", amount=80000), actor="system:test")
    first = company["rule"]
    first.draft = draft_for(10000)
    first.save()
    second = Rule.objects.select_related("live_version").get(key="second")
    second.draft = {**draft_for(60000), "key": "second"}
    second.save()
    never = Rule.objects.create(
        key="never",
        name="Never published",
        subject_type="change_order",
        draft={**draft_for(90000), "key": "never"},
    )
    now = timezone.now()
    rules = [Rule.objects.select_related("live_version").get(pk=r.pk) for r in (first, second, never)]

    with CaptureQueriesContext(connection) as together:
        results = preview_drafts(rules, now=now)
    with CaptureQueriesContext(connection) as alone:
        preview_drafts(rules[:1], now=now)

    def comparable(result):
        # SQL returns rows unordered; with fewer matches than the sample size the sets are complete.
        data = result.to_json()
        return {k: sorted(v) if k in ("samples", "new", "gone") else v for k, v in data.items()}

    assert [comparable(r) for r in results] == [comparable(preview_draft(rule, now=now)) for rule in rules]
    assert [r.matches for r in results] == [3, 2, 1]
    assert (results[1].new_count, results[1].gone_count) == (1, 0)  # v1 at 80,000 matched huge only
    assert results[2].live_version is None and results[2].new_count == 1
    assert len(together.captured_queries) == len(alone.captured_queries)


def test_executive_reads_the_shadow_page_but_cannot_start_shadow(client, executive, company):  # noqa: F811
    executive.is_staff = True  # the group grants view permissions; entering admin also needs staff
    executive.save()
    rule = company["rule"]
    client.force_login(executive)
    url = reverse("admin:rules_rule_shadow", args=[rule.pk])

    page = client.get(url)

    assert page.status_code == 200 and 'value="start"' not in page.content.decode()
    assert client.post(url, {"do": "start"}).status_code == 403
    assert Rule.objects.get(pk=rule.pk).shadow_since is None


def test_each_shadow_sample_names_the_rule_that_would_flag_it(client, ops_manager, company):  # noqa: F811
    """The shadow page lists subjects; each says which rule's draft would flag it (a page read alone, a
    link followed from elsewhere or a copied line does not carry the page's title)."""
    rule = company["rule"]
    rule.draft = {**draft_for(10000), "name": "Big change orders <b>now</b>"}
    rule.save()
    (run,) = shadow_evaluate(rules=[rule])
    assert run.rule_words == "big-co — Big change orders <b>now</b>"

    client.force_login(ops_manager)
    page = client.get(reverse("admin:rules_rule_shadow", args=[rule.pk])).content.decode()

    named = re.findall(r'<span class="shadow-sample-rule">— ([^<]*)</span>', page)
    said = "would be flagged by big-co — Big change orders &lt;b&gt;now&lt;/b&gt;"
    assert named.count(said) == len(run.sample_ids) == 3
    assert named.count(said.replace("would be", "newly")) == len(run.added_ids) == 1
    assert "<b>now</b>" not in page
