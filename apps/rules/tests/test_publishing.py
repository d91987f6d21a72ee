"""Publishing acts: a new version is evaluated over every subject of its type at once, by a worker, in a
run admin follows (SPEC "Outcomes — Publishing")."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.escalations.models import Escalation
from apps.rules.authoring.preview import preview_draft
from apps.rules.authoring.publishing import publish_run_perform, publish_runs_requeue
from apps.rules.engine.ruleset import parse_rules
from apps.rules.evaluation.services import evaluate_subjects, rule_publish, rules_import
from apps.rules.models import EvaluationRun, Rule, SubjectState

from .test_services import fresh_streams, risky_change_order, rule_yaml

pytestmark = pytest.mark.django_db


@pytest.fixture
def matches():
    """Three change orders the rule matches (9% margin, ≥ 50,000) and one it does not."""
    fresh_streams()
    return [risky_change_order() for _ in range(3)] + [risky_change_order(amount="100")]


def publish_runs():
    return EvaluationRun.objects.filter(trigger="publish").order_by("pk")


def test_publishing_queues_a_run_of_the_new_version_on_commit(matches, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        rules_import(text=rule_yaml(), actor="system:test")

    [run] = publish_runs()
    rule = Rule.objects.get(key="big-co")
    assert list(run.published_versions.all()) == [rule.live_version]
    assert run.state == "queued" and run.subject_type == "change_order" and run.queued_at is not None
    # One task, sent only once the publish has committed (nothing opened until a worker runs it).
    assert len(sent) == 1 and not Escalation.objects.exists()


def test_the_worker_evaluates_every_subject_and_opens_the_escalations(matches):
    rules_import(text=rule_yaml(), actor="system:test")
    [run] = publish_runs()

    publish_run_perform(run_id=run.pk)

    run.refresh_from_db()
    assert run.state == "complete" and run.subjects == 4 and run.started_at is not None
    assert run.progress["opened"] == 3 == run.progress["traced"] == run.progress["to_trace"]
    opened = Escalation.objects.filter(opened_at=run.evaluated_at)
    assert sorted(opened.values_list("subject_id", flat=True)) == sorted(co.pk for co in matches[:3])
    assert run.outcomes[0]["matched"] == 3


def test_a_run_is_performed_once_however_often_its_task_arrives(matches):
    rules_import(text=rule_yaml(), actor="system:test")
    [run] = publish_runs()
    publish_run_perform(run_id=run.pk)

    again = publish_run_perform(run_id=run.pk)

    assert "already taken or finished" in again
    assert Escalation.objects.count() == 3


def test_a_run_whose_worker_died_may_be_claimed_again(matches, settings):
    rules_import(text=rule_yaml(), actor="system:test")
    [run] = publish_runs()
    long_ago = timezone.now() - dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 120)
    EvaluationRun.objects.filter(pk=run.pk).update(started_at=long_ago)

    publish_run_perform(run_id=run.pk)

    run.refresh_from_db()
    assert run.state == "complete" and Escalation.objects.count() == 3


def test_an_unchanged_import_or_a_disabled_rule_queues_nothing(matches):
    rules_import(text=rule_yaml(), actor="system:test")
    rules_import(text=rule_yaml(), actor="system:test")  # unchanged: no new version
    assert publish_runs().count() == 1

    rule = Rule.objects.get(key="big-co")
    Rule.objects.filter(pk=rule.pk).update(enabled=False)
    rule.refresh_from_db()
    rule.draft = parse_rules(rule_yaml(amount=40000))[0].to_dict()
    rule.save()
    rule_publish(rule=rule, actor="system:test")

    assert rule.versions.count() == 2 and publish_runs().count() == 1


def test_importing_several_rules_of_one_subject_type_queues_one_run(matches):
    rules_import(text=rule_yaml() + rule_yaml(key="other-co", route="standard"), actor="system:test")

    [run] = publish_runs()
    assert sorted(v.rule.key for v in run.published_versions.all()) == ["big-co", "other-co"]


def test_beat_sends_again_a_run_still_queued_after_a_minute(matches, monkeypatch):
    from apps.rules import tasks

    rules_import(text=rule_yaml(), actor="system:test")
    [run] = publish_runs()
    sent: list[int] = []
    monkeypatch.setattr(tasks.evaluate_run_task, "delay", sent.append)

    assert publish_runs_requeue() == 0  # just queued: its own task is on its way
    assert publish_runs_requeue(now=timezone.now() + dt.timedelta(seconds=61)) == 1
    assert sent == [run.pk]


def test_preview_says_what_publishing_will_do(matches):
    rules_import(text=rule_yaml(), actor="system:test")
    publish_run_perform(run_id=publish_runs().get().pk)
    rule = Rule.objects.get(key="big-co")
    fourth = risky_change_order()  # a new match, not escalated yet
    # One of the three open escalations is closed and its subject in cooldown; another subject snoozed.
    closed = Escalation.objects.get(subject_id=matches[0].pk)
    closed.status = Escalation.Status.RESOLVED
    closed.save(update_fields=["status"])
    soon = timezone.now() + dt.timedelta(days=1)
    SubjectState.objects.filter(rule=rule, subject_id=matches[0].pk).update(cooldown_until=soon)
    rule.draft = parse_rules(rule_yaml(amount=40000))[0].to_dict()

    estimate = preview_draft(rule).estimate

    assert estimate is not None
    assert (estimate.subjects, estimate.matches, estimate.opens) == (5, 4, 1)
    assert (estimate.already_open, estimate.cooling_down) == (2, 1)
    assert estimate.sentence("change_order").startswith(
        "Publishing will evaluate 5 change orders now and open about 1 escalation;"
    )
    assert fourth.pk not in Escalation.objects.values_list("subject_id", flat=True)


def test_a_higher_route_rule_that_runs_first_takes_the_matches(matches):
    rules_import(text=rule_yaml(key="exec-first", route="executive", priority=1), actor="system:test")
    rules_import(text=rule_yaml(key="std-later", route="standard", priority=50), actor="system:test")

    estimate = preview_draft(Rule.objects.get(key="std-later")).estimate

    assert estimate is not None and (estimate.matches, estimate.higher_route, estimate.opens) == (3, 3, 0)
    # And the run agrees: the standard rule's matches are suppressed, the executive rule opens.
    evaluate_subjects(subject_type="change_order")
    assert set(Escalation.objects.values_list("rule__key", flat=True)) == {"exec-first"}


def test_publishing_in_admin_leads_to_the_run_page_which_reloads_until_complete(client, ops_manager, matches):
    rules_import(text=rule_yaml(amount=90000), actor="system:test")
    rule = Rule.objects.get(key="big-co")
    rule.draft = parse_rules(rule_yaml())[0].to_dict()
    rule.save()
    client.force_login(ops_manager)

    preview = client.get(reverse("admin:rules_rule_preview", args=[rule.pk]))
    assert (
        "Publishing will evaluate 4 change orders now and open about 3 escalations."
        in preview.content.decode()
    )

    response = client.post(reverse("admin:rules_rule_publish", args=[rule.pk]), {"confirm": "yes"})

    run = publish_runs().last()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:rules_evaluationrun_change", args=[run.pk])
    page = client.get(response["Location"]).content.decode()
    assert '<meta http-equiv="refresh" content="2">' in page and "queued: waiting for a worker" in page

    publish_run_perform(run_id=run.pk)

    page = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in page and "complete" in page
    for escalation in Escalation.objects.all():
        assert reverse("admin:escalations_escalation_change", args=[escalation.pk]) in page
    rule_page = client.get(reverse("admin:rules_rule_change", args=[rule.pk])).content.decode()
    assert reverse("admin:rules_evaluationrun_change", args=[run.pk]) in rule_page
    assert "3 escalations opened" in rule_page


def test_a_run_that_stopped_long_ago_is_shown_incomplete_and_its_page_does_not_reload(
    client, ops_manager, matches, settings
):
    evaluate_subjects(subject_type="change_order")  # no rule yet: nothing
    rules_import(text=rule_yaml(), actor="system:test")
    long_ago = timezone.now() - dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 120)
    run = publish_runs().get()
    EvaluationRun.objects.filter(pk=run.pk).update(started_at=long_ago, evaluated_at=long_ago)
    client.force_login(ops_manager)

    page = client.get(reverse("admin:rules_evaluationrun_change", args=[run.pk])).content.decode()

    assert "incomplete: it stopped before" in page and 'http-equiv="refresh"' not in page
