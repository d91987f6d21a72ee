"""POST /api/rules/{key}/publish: the draft becomes a new version and a run evaluates it at once."""

from __future__ import annotations

from apps.rules.authoring.publishing import publish_run_perform
from apps.rules.engine.ruleset import parse_rules
from apps.rules.evaluation.services import rules_import
from apps.rules.models import EvaluationRun, Rule
from apps.rules.tests.test_services import fresh_streams, risky_change_order, rule_yaml


def _draft(amount: int) -> dict:
    return parse_rules(rule_yaml(amount=amount))[0].to_dict()


def test_publishing_through_the_api_queues_a_run_that_opens_the_escalations(
    as_persona, django_capture_on_commit_callbacks
):
    fresh_streams()
    [risky_change_order() for _ in range(2)]
    rules_import(text=rule_yaml(amount=900000), actor="system:test")
    Rule.objects.filter(key="big-co").update(draft=_draft(50000))

    with django_capture_on_commit_callbacks() as sent:
        response = as_persona("ops_manager").post("/api/rules/big-co/publish/")

    assert response.status_code == 200
    body = response.json()
    assert (body["rule"], body["version"], body["published"]) == ("big-co", 2, True)
    assert len(sent) == 1  # the run's task, after commit
    run = as_persona("ops_manager").get(f"/api/evaluation-runs/{body['evaluation_run']}/").json()
    assert run["state"] == "queued" and run["trigger"] == "publish"

    publish_run_perform(run_id=body["evaluation_run"])

    run = as_persona("ops_manager").get(f"/api/evaluation-runs/{body['evaluation_run']}/").json()
    assert run["state"] == "complete" and run["progress"]["opened"] == 2


def test_publishing_an_unchanged_draft_publishes_nothing(as_persona):
    fresh_streams()
    rules_import(text=rule_yaml(), actor="system:test")

    body = as_persona("administrator").post("/api/rules/big-co/publish/").json()

    assert body == {"rule": "big-co", "version": 1, "published": False, "evaluation_run": None}
    assert EvaluationRun.objects.filter(trigger="publish").count() == 1  # the import's own


def test_an_invalid_draft_is_a_400_naming_its_problems(as_persona):
    rules_import(text=rule_yaml(), actor="system:test")
    Rule.objects.filter(key="big-co").update(draft={**_draft(50000), "severity": "apocalyptic"})

    response = as_persona("ops_manager").post("/api/rules/big-co/publish/")

    assert response.status_code == 400
    assert "severity" in str(response.json()["error"])
    assert Rule.objects.get(key="big-co").live_version.number == 1


def test_executives_and_account_managers_do_not_publish(as_persona):
    rules_import(text=rule_yaml(), actor="system:test")
    Rule.objects.filter(key="big-co").update(draft=_draft(40000))

    assert as_persona("executive").post("/api/rules/big-co/publish/").status_code == 403
    assert as_persona("account_manager").post("/api/rules/big-co/publish/").status_code == 403
    assert Rule.objects.get(key="big-co").live_version.number == 1
