"""Reported misses: who may report, the facts they are judged on, and the loosening they feed."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation
from apps.learning.misses import miss_report
from apps.learning.models import LearningSettings, ReportedMiss
from apps.learning.thresholds import suggestions_generate, sweep_version
from apps.rules.models import Decision
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    CrmOwnerFactory,
    DocumentFactory,
    ProjectFactory,
)

from .builders import T0, decision, escalation, publish, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def projects(account_manager, other_account_manager):
    mine = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory(user=account_manager)))
    theirs = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory(user=other_account_manager)))
    return mine, theirs


def test_a_miss_is_judged_on_the_facts_stored_as_of_its_day(projects, ops_manager):
    mine, _ = projects
    version = publish("thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 10}]})
    Decision.objects.bulk_create(
        [
            decision(version, mine.pk, outcome="not_matched", at=T0,
                     facts=snapshot(project__margin_pct="12")),
            # Fixed later: a miss dated before the fix must not see it.
            decision(version, mine.pk, outcome="not_matched", at=T0 + dt.timedelta(days=40),
                     facts=snapshot(project__margin_pct="30")),
        ]
    )  # fmt: skip
    miss = miss_report(
        subject_type="project",
        subject_id=mine.pk,
        outcome="actioned",
        missed_at=T0 + dt.timedelta(days=2),
        rule=version.rule,
        actor=ops_manager,
    )
    assert miss.facts["project.margin_pct"]["value"] == "12" and miss.facts_from == "decision"
    assert miss.subject_label == mine.name
    entry = AuditEntry.objects.get(action="miss.reported")
    assert entry.actor == "user:olivia" and entry.data["subject"] == f"project:{mine.pk}"


def test_account_managers_report_only_on_their_own_clients(projects, account_manager, outsider):
    mine, theirs = projects
    miss_report(subject_type="project", subject_id=mine.pk, outcome="actioned", actor=account_manager)
    with pytest.raises(PermissionDenied):
        miss_report(subject_type="project", subject_id=theirs.pk, outcome="actioned", actor=account_manager)
    with pytest.raises(PermissionDenied):
        miss_report(subject_type="project", subject_id=mine.pk, outcome="actioned", actor=outsider)
    assert ReportedMiss.objects.count() == 1


def test_api_reports_a_miss_and_refuses_others_subjects(client, projects, account_manager, executive):
    mine, theirs = projects
    client.force_login(account_manager)
    body = {"subject_type": "project", "subject_id": mine.pk, "outcome": "actioned", "note": "found late"}
    response = client.post("/api/analytics/misses/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["subject_label"] == mine.name and response.json()["reported_by"] == "maria"
    body["subject_id"] = theirs.pk
    response = client.post("/api/analytics/misses/", body, content_type="application/json")
    assert response.status_code == 403 and "your own" not in response.json()["error"]["message"]
    body["outcome"] = "false_alarm"
    response = client.post("/api/analytics/misses/", body, content_type="application/json")
    assert response.status_code == 400
    client.force_login(executive)
    assert len(client.get("/api/analytics/misses/").json()["results"]) == 1


def test_api_refuses_outsiders(client, outsider):
    client.force_login(outsider)
    response = client.post("/api/analytics/misses/", {}, content_type="application/json")
    assert response.status_code == 403


def test_the_page_reports_a_miss(client, projects, account_manager):
    mine, theirs = projects
    client.force_login(account_manager)
    page = client.get("/learning/misses/report/", {"subject_type": "project", "subject_id": mine.pk})
    assert page.status_code == 200 and f'value="{mine.pk}"' in page.content.decode()
    form = {
        "subject_type": "project",
        "subject_id": mine.pk,
        "outcome": "approved",
        "missed_at": "2026-06-02",
    }
    response = client.post("/learning/misses/report/", form, follow=True)
    assert "Miss recorded on" in response.content.decode()
    miss = ReportedMiss.objects.get()
    assert miss.missed_at.date() == dt.date(2026, 6, 2) and miss.reported_by == account_manager
    form["subject_id"] = theirs.pk
    refused = client.post("/learning/misses/report/", form)
    assert refused.status_code == 403 and ReportedMiss.objects.count() == 1


def test_the_page_says_what_is_wrong_beside_each_field_and_records_nothing(client, projects, account_manager):
    mine, _ = projects
    client.force_login(account_manager)
    page = client.get("/learning/misses/report/", {"subject_type": "project", "subject_id": mine.pk})
    assert f"Reporting on <strong>{mine.name}</strong>" in page.content.decode()
    future = (timezone.localdate() + dt.timedelta(days=3)).isoformat()
    wrong = {"subject_type": "project", "subject_id": 999_999, "outcome": "", "missed_at": future}
    refused = client.post("/learning/misses/report/", wrong)
    text = refused.content.decode()
    assert refused.status_code == 400 and not ReportedMiss.objects.exists()
    assert "The miss was not recorded: see the fields marked below." in text
    errors = dict(refused.context["form"].errors)
    assert errors["subject_id"] == ["No project you may report on is numbered or named “999999”."]
    assert errors["outcome"] == ["This field is required."]
    assert errors["missed_at"] == ["This day is still to come: a miss is about something that happened."]
    assert text.count('class="field-error"') == 3


def test_the_page_finds_a_subject_by_what_people_call_it(client, projects, account_manager):
    mine, _ = projects
    orders = [ChangeOrderFactory(project=mine, number="CO-7"), ChangeOrderFactory(number="co-7")]
    client.force_login(account_manager)
    form = {"subject_type": "project", "subject_id": f"  {mine.number.lower()} ", "outcome": "approved"}
    assert client.post("/learning/misses/report/", form).status_code == 302
    form["subject_id"] = mine.name.upper()
    assert client.post("/learning/misses/report/", form).status_code == 302
    # A change order by its number; the other manager's CO-7 is not a candidate, so this one is meant.
    form.update(subject_type="change_order", subject_id="CO-7")
    assert client.post("/learning/misses/report/", form).status_code == 302
    assert [m.subject_id for m in ReportedMiss.objects.order_by("id")] == [mine.pk, mine.pk, orders[0].pk]


def test_several_matches_are_listed_for_those_who_may_see_them_and_picked_by_fulcrums_number(
    client, projects, ops_manager
):
    mine, theirs = projects
    orders = [ChangeOrderFactory(project=p, number="CO-7", title="Extra steel") for p in (mine, theirs)]
    client.force_login(ops_manager)
    form = {"subject_type": "change_order", "subject_id": "co-7", "outcome": "approved"}
    refused = client.post("/learning/misses/report/", form)
    assert refused.status_code == 400 and not ReportedMiss.objects.exists()
    [error] = refused.context["form"].errors["subject_id"]
    assert error == (
        f"Several change orders match “co-7”: change order CO-7 Extra steel on {mine.number} "
        f"(#{orders[0].pk}); change order CO-7 Extra steel on {theirs.number} (#{orders[1].pk}). "
        f"Give Fulcrum's number, e.g. #{orders[0].pk}."
    )
    form["subject_id"] = f"{theirs.number} CO-7"  # its project's number first
    assert client.post("/learning/misses/report/", form).status_code == 302
    form["subject_id"] = f"#{orders[0].pk}"
    assert client.post("/learning/misses/report/", form).status_code == 302
    assert [m.subject_id for m in ReportedMiss.objects.order_by("id")] == [orders[1].pk, orders[0].pk]


def test_an_account_manager_is_never_shown_another_managers_subject(client, projects, account_manager):
    _, theirs = projects
    client.force_login(account_manager)
    linked = client.get("/learning/misses/report/", {"subject_type": "project", "subject_id": theirs.pk})
    assert linked.status_code == 200 and theirs.name not in linked.content.decode()
    by_name = {"subject_type": "project", "subject_id": theirs.name, "outcome": ""}
    refused = client.post("/learning/misses/report/", by_name)
    assert refused.context["form"].errors["subject_id"] == [
        f"No project you may report on is numbered or named “{theirs.name}”."
    ]
    by_number = {**by_name, "subject_id": f"#{theirs.pk}"}  # outcome missing: the page is shown again
    text = client.post("/learning/misses/report/", by_number).content.decode()
    assert theirs.name not in text and "Reporting on" not in text
    by_number["outcome"] = "approved"
    assert client.post("/learning/misses/report/", by_number).status_code == 403
    assert not ReportedMiss.objects.exists()


def test_a_miss_on_a_document_is_found_by_its_id_and_judged_on_its_facts(
    client, projects, account_manager, ops_manager
):
    mine, _ = projects
    linked = DocumentFactory(external_id="inv-2041", project=mine, confidence=0.42)
    unlinked = DocumentFactory(external_id="inv-9999")
    publish(
        "doc-unsure", {"all": [{"fact": "document.confidence", "op": "lt", "value": 0.5}]}, subject="document"
    )
    client.force_login(account_manager)
    form = {"subject_type": "document", "subject_id": "INV-2041", "outcome": "approved"}
    assert client.post("/learning/misses/report/", form).status_code == 302
    miss = ReportedMiss.objects.get()
    assert (miss.subject_id, miss.subject_label) == (linked.pk, "document inv-2041 (invoice)")
    assert (
        miss.facts["document.confidence"]["value"] == "0.4200" and miss.facts_from == "computed when reported"
    )
    # Nobody's client: not an account manager's to report, by id or by name; operations may.
    form["subject_id"] = "inv-9999"
    assert "No document you may report on" in client.post("/learning/misses/report/", form).content.decode()
    form["subject_id"] = f"#{unlinked.pk}"
    assert client.post("/learning/misses/report/", form).status_code == 403
    client.force_login(ops_manager)
    api = client.post(
        "/api/analytics/misses/",
        {"subject_type": "document", "subject_id": unlinked.pk, "outcome": "rejected"},
        content_type="application/json",
    )
    assert api.status_code == 201, api.content
    assert api.json()["subject_label"] == "document inv-9999 (invoice)"


def test_fulcrums_number_past_any_id_is_no_such_subject(client, ops_manager):
    client.force_login(ops_manager)
    form = {"subject_type": "client", "subject_id": "#" + "9" * 30, "outcome": "approved"}
    refused = client.post("/learning/misses/report/", form)
    assert refused.context["form"].errors["subject_id"] == [f"Fulcrum has no client #{'9' * 30}."]


def test_the_page_refuses_outsiders(client, outsider):
    client.force_login(outsider)
    assert client.get("/learning/misses/report/").status_code == 403


def test_reported_misses_loosen_a_rule_that_is_too_strict(ops_manager):
    """The rule flags margin < 10; projects up to 15% needed action. Flagged ones were labelled with 10%
    noise; misses reported between 10% and 15%; shadow samples above 15% were fine."""
    settings = LearningSettings.load()
    settings.miss_cost = settings.false_alarm_cost = Decimal(1)
    settings.save()
    rng = random.Random(3)
    version = publish("too-strict", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 10}]})
    escalations, misses = [], []
    for i in range(600):
        margin = round(rng.uniform(0, 30), 1)
        at = T0 + dt.timedelta(hours=i)
        facts = snapshot(project__margin_pct=str(margin))
        truth = margin < 15
        if margin < 10:
            noisy = truth if rng.random() > 0.1 else not truth
            escalations.append(
                escalation(version, i, opened=at, closed_after=dt.timedelta(days=1), facts=facts,
                           outcome="actioned" if noisy else "false_alarm")
            )  # fmt: skip
        elif truth:
            misses.append(
                ReportedMiss(subject_type="project", subject_id=i, subject_label=f"p{i}", rule=version.rule,
                             outcome="actioned", missed_at=at, facts=facts, facts_from="decision",
                             reported_at=at)
            )  # fmt: skip
    Escalation.objects.bulk_create(escalations)
    ReportedMiss.objects.bulk_create(misses)
    [sweep] = sweep_version(version)
    assert sweep.current.misses > 0 and sweep.passed, sweep.reason
    [suggestion] = suggestions_generate(rule=version.rule)
    assert 14 <= float(suggestion.proposed_value) <= 16, "loosened to about the true 15%"
    held = suggestion.validation["holdout"]
    assert held["proposed"]["caught"] > held["current"]["caught"]
    assert held["proposed"]["recall"] > held["current"]["recall"]
