"""The escalation page, the account manager's queue and the act endpoint, for each role."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from decimal import Decimal

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from apps.escalations.models import Delivery, Escalation, EscalationEvent
from apps.rules.models import Rule, RuleVersion
from tests.factories import ChangeOrderFactory, ClientFactory, CrmOwnerFactory, ProjectFactory

XSS = "<script>alert(1)</script>"
_keys = itertools.count(1)

EVIDENCE = {
    "facts": {
        "change_order.amount": {
            "value": "60000.00",
            "age_s": 120.0,
            "source": "pm",
            "unit": "USD",
            "type": "money",
        },
        "project.margin_pct": {
            "value": "9.5",
            "age_s": 7200.0,
            "source": "accounting",
            "unit": "%",
            "type": "percent",
        },
        "client.days_to_renewal": {
            "value": 45,
            "age_s": 30.0,
            "source": "crm",
            "unit": "days",
            "type": "int",
        },
        "client.missed_last_milestone": {
            "value": None,
            "age_s": None,
            "source": "pm",
            "unit": "",
            "type": "bool",
        },
    },
    "explanation": [
        {
            "path": "when",
            "fact": "",
            "op": "all",
            "expected": "",
            "actual": "",
            "result": "true",
            "reason": "",
            "text": "all of",
        },
        {
            "path": "when.all[0]",
            "fact": "change_order.amount",
            "op": "gte",
            "expected": "50000",
            "actual": "60000.00",
            "result": "true",
            "reason": "",
            "text": "change_order.amount is 60,000.00 USD, at least 50,000.00 USD — true",
        },
        {
            "path": "when.all[1]",
            "fact": "project.margin_pct",
            "op": "lt",
            "expected": "12",
            "actual": "9.5",
            "result": "true",
            "reason": "",
            "text": "project.margin_pct is 9.5 %, less than 12 % — true",
        },
        {
            "path": "when.all[2]",
            "fact": "",
            "op": "any",
            "expected": "",
            "actual": "",
            "result": "true",
            "reason": "",
            "text": "any of",
        },
        {
            "path": "when.all[2].any[0]",
            "fact": "client.missed_last_milestone",
            "op": "is",
            "expected": "true",
            "actual": None,
            "result": "insufficient_data",
            "reason": "no value",
            "text": "client.missed_last_milestone has no value — insufficient data",
        },
        {
            "path": "when.all[2].any[1]",
            "fact": "client.days_to_renewal",
            "op": "lte",
            "expected": "60",
            "actual": "45",
            "result": "true",
            "reason": "",
            "text": "client.days_to_renewal is 45 days — true",
        },
    ],
    "outcome": "matched",
    "rule_version": 1,
}


# --- data helpers (plain ORM + the shared entity factories) ----------------------------------------


def make_rule(
    *,
    name: str = "Change order needs executive judgment",
    route: str = "executive",
    actions: tuple[str, ...] = ("email_account_manager", "flag_dashboard"),
) -> RuleVersion:
    """A published rule version; its actions include ``flag_dashboard`` unless told otherwise (only those
    flag a project on the dashboard)."""
    key = f"rule-{next(_keys)}"
    spec = {
        "key": key,
        "name": name,
        "subject": "change_order",
        "route": route,
        "severity": "high",
        "actions": list(actions),
    }
    rule = Rule.objects.create(key=key, name=name, subject_type="change_order", draft=spec)
    version = RuleVersion.objects.create(
        rule=rule, number=1, spec=spec, spec_hash=key, published_at=timezone.now()
    )
    Rule.objects.filter(pk=rule.pk).update(live_version=version)
    return version


def make_client(*, owner_user=None, name: str | None = None, renewal_in_days: int | None = 45):
    owner = CrmOwnerFactory(
        user=owner_user,
        name=(owner_user.get_username().title() if owner_user else "Nobody"),
        email=owner_user.email if owner_user else "nobody@example.test",
    )
    renewal = (
        timezone.localdate() + dt.timedelta(days=renewal_in_days) if renewal_in_days is not None else None
    )
    return ClientFactory(owner=owner, renewal_date=renewal, **({"name": name} if name else {}))


def make_escalation(
    *,
    client=None,
    project=None,
    version: RuleVersion | None = None,
    route: str = "executive",
    severity: str = "high",
    status: str = Escalation.Status.OPEN,
    summary: str = "Change order of 60,000.00 USD on a project at 9.5 % margin",
    evidence: dict | None = None,
    fired_ago: dt.timedelta = dt.timedelta(minutes=5),
) -> Escalation:
    """An escalation on a fresh change order of ``project`` (or of a new project of ``client``)."""
    client = client or (project.client if project else make_client())
    project = project or ProjectFactory(client=client)
    version = version or make_rule(route=route)
    change_order = ChangeOrderFactory(project=project, amount=Decimal("60000.00"))
    fired = timezone.now() - fired_ago
    return Escalation.objects.create(
        rule=version.rule,
        rule_version=version,
        subject_type="change_order",
        subject_id=change_order.pk,
        subject_label=f"CO {change_order.number} {change_order.title} on {project}",
        client=client,
        project=project,
        route=route,
        severity=severity,
        priority=10,
        status=status,
        summary=summary,
        evidence=EVIDENCE if evidence is None else evidence,
        opened_at=fired,
        last_fired_at=fired,
        outcome=("actioned" if status == Escalation.Status.RESOLVED else ""),
    )


def add_timeline(escalation: Escalation, n: int) -> None:
    now = timezone.now()
    EscalationEvent.objects.bulk_create(
        EscalationEvent(
            escalation=escalation,
            kind="refired",
            actor="system:rules",
            via="system",
            note=f"note {i}",
            created_at=now - dt.timedelta(minutes=n - i),
        )
        for i in range(n)
    )
    Delivery.objects.bulk_create(
        Delivery(
            escalation=escalation,
            action="email_account_manager",
            target=f"am{i}@example.test",
            idempotency_key=f"{escalation.pk}-{i}",
            state=Delivery.State.DELIVERED,
            attempts=1,
            next_attempt_at=now,
            created_at=now - dt.timedelta(minutes=n - i),
            delivered_at=now,
        )
        for i in range(n)
    )


def login(client: HttpClient, user) -> HttpClient:
    client.force_login(user)
    return client


def detail_url(escalation: Escalation) -> str:
    return reverse("escalation-detail", args=[escalation.pk])


def act_url(escalation: Escalation) -> str:
    return reverse("escalation-act", args=[escalation.pk])


@pytest.fixture
def mine(account_manager) -> Escalation:
    """An open executive-route change-order escalation on a client that ``account_manager`` owns."""
    return make_escalation(client=make_client(owner_user=account_manager, name="Harborview Medical Partners"))


@pytest.fixture
def mine_standard(account_manager) -> Escalation:
    """An open standard-route change-order escalation on a client that ``account_manager`` owns."""
    return make_escalation(client=make_client(owner_user=account_manager), route="standard")


# --- the escalation page --------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["executive", "ops_manager", "administrator", "account_manager"])
def test_detail_is_shown_to_roles_that_can_see_it(client, request, mine, persona):
    response = login(client, request.getfixturevalue(persona)).get(detail_url(mine))
    assert response.status_code == 200
    assert "Harborview Medical Partners" in response.content.decode()


@pytest.mark.parametrize("persona", ["other_account_manager", "outsider"])
def test_detail_is_404_for_people_who_cannot_see_it(client, request, mine, persona):
    assert login(client, request.getfixturevalue(persona)).get(detail_url(mine)).status_code == 404


def test_account_manager_probing_another_managers_escalation_gets_404_on_page_and_act(
    client, mine, other_account_manager
):
    login(client, other_account_manager)
    assert client.get(detail_url(mine)).status_code == 404
    assert client.post(act_url(mine), {"action": "acknowledge"}).status_code == 404
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.OPEN


def test_detail_redirects_anonymous_to_login(client, mine):
    response = client.get(detail_url(mine))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_detail_shows_subject_explanation_context_and_timeline(client, executive, mine):
    add_timeline(mine, 1)
    Delivery.objects.filter(escalation=mine).update(
        state=Delivery.State.FAILED, last_error="SMTP 451 try later"
    )
    body = login(client, executive).get(detail_url(mine)).content.decode()
    # subject, route, severity (as a word), status
    assert mine.subject_label in body and "Executive" in body and "High" in body and "Open" in body
    # why, in sentences built from the evidence by the one formatter (the stored summary was a formula)
    assert "Change order amount $60,000.00 is at least $50,000.00" in body
    # explanation: operator in words, formatted threshold and actual, result in words, nested groups;
    # labels first, fact keys behind a details toggle
    assert "at least" in body and "$50,000.00" in body and "$60,000.00" in body
    assert "less than" in body and "12%" in body
    assert "<summary>Details</summary><code>project.margin_pct" in body
    assert "Any of the following" in body and "Insufficient data" in body and "Met" in body
    # context snapshot: value with unit, data age in words, source
    assert "synced 2 min ago" in body and "synced 2 h ago" in body and "accounting" in body
    assert "45 days" in body and "no data" in body
    # timeline: the event and the delivery with its state and error
    assert "Refired" in body and "system:rules" in body
    assert "am0@example.test" in body and "Failed" in body and "SMTP 451 try later" in body


def test_detail_offers_account_manager_their_actions_but_not_the_executive_decision(
    client, account_manager, mine
):
    # An executive-route change order waits for an executive: its account manager acknowledges and notes.
    body = login(client, account_manager).get(detail_url(mine)).content.decode()
    assert 'value="acknowledge"' in body and 'value="note"' in body
    assert 'value="resolve"' not in body and 'value="dismiss"' not in body and 'value="approve"' not in body


def test_detail_offers_account_manager_resolve_and_dismiss_on_the_standard_route(
    client, account_manager, mine_standard
):
    body = login(client, account_manager).get(detail_url(mine_standard)).content.decode()
    assert 'value="acknowledge"' in body and 'value="resolve"' in body and 'value="dismiss"' in body
    assert 'value="approve"' not in body


def test_detail_offers_executive_the_decision(client, executive, mine):
    body = login(client, executive).get(detail_url(mine)).content.decode()
    assert 'value="approve"' in body and 'value="reject"' in body


def test_closed_escalation_offers_no_actions(client, executive):
    closed = make_escalation(status=Escalation.Status.RESOLVED)
    body = login(client, executive).get(detail_url(closed)).content.decode()
    # Only a note can still be added; no transition is offered.
    for action in ("acknowledge", "resolve", "dismiss", "approve", "reject"):
        assert f'value="{action}"' not in body
    assert 'value="note"' in body
    assert "Actioned" in body


def test_detail_query_count_does_not_grow_with_the_timeline(
    client, executive, mine, django_assert_max_num_queries
):
    add_timeline(mine, 40)
    login(client, executive)
    with django_assert_max_num_queries(12):
        response = client.get(detail_url(mine))
    assert response.content.decode().count("am39@example.test") == 1


def test_detail_escapes_synced_and_evidence_text(client, executive):
    evidence = {
        "facts": {"client.name": {"value": XSS, "age_s": 1.0, "source": XSS, "unit": "", "type": "text"}},
        "explanation": [
            {
                "path": "when.all[0]",
                "fact": "client.name",
                "op": "eq",
                "expected": XSS,
                "actual": XSS,
                "result": "true",
                "reason": XSS,
                "text": XSS,
            }
        ],
    }
    escalation = make_escalation(client=make_client(name=XSS), summary=XSS, evidence=evidence)
    EscalationEvent.objects.create(
        escalation=escalation, kind="note", actor=XSS, via="web", note=XSS, created_at=timezone.now()
    )
    body = login(client, executive).get(detail_url(escalation)).content.decode()
    assert XSS not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


# --- the act endpoint -----------------------------------------------------------------------------


def test_act_does_not_allow_get(client, account_manager, mine):
    assert login(client, account_manager).get(act_url(mine)).status_code == 405


def test_act_redirects_anonymous_to_login(client, mine):
    response = client.post(act_url(mine), {"action": "acknowledge"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.OPEN


def test_act_with_csrf_token_acknowledges_and_flashes(account_manager, mine):
    browser = login(HttpClient(enforce_csrf_checks=True), account_manager)
    browser.get(detail_url(mine))  # sets the CSRF cookie, as a browser would
    token = browser.cookies["csrftoken"].value
    response = browser.post(
        act_url(mine), {"action": "acknowledge", "note": "on it", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and response["Location"] == detail_url(mine)
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.ACKNOWLEDGED
    event = mine.events.get(kind="acknowledged")
    assert (event.actor, event.via, event.note) == (account_manager.get_username(), "web", "on it")
    body = browser.get(detail_url(mine)).content.decode()
    assert f"Escalation #{mine.pk} acknowledged." in body


def test_act_without_csrf_token_is_refused(account_manager, mine):
    browser = login(HttpClient(enforce_csrf_checks=True), account_manager)
    assert browser.post(act_url(mine), {"action": "acknowledge"}).status_code == 403
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.OPEN


def test_invalid_transition_shows_a_message_not_an_error(client, account_manager):
    done = make_escalation(client=make_client(owner_user=account_manager), status=Escalation.Status.RESOLVED)
    response = login(client, account_manager).post(act_url(done), {"action": "acknowledge"}, follow=True)
    assert response.status_code == 200
    body = response.content.decode()
    assert f"Escalation #{done.pk} was not changed" in body and "only open escalations" in body
    done.refresh_from_db()
    assert done.status == Escalation.Status.RESOLVED


def test_resolve_needs_an_outcome(client, account_manager, mine):
    response = login(client, account_manager).post(act_url(mine), {"action": "resolve"}, follow=True)
    assert "Choose how it was resolved" in response.content.decode()
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.OPEN


def test_unknown_action_changes_nothing(client, account_manager, mine):
    response = login(client, account_manager).post(act_url(mine), {"action": "delete"}, follow=True)
    assert response.status_code == 200 and "was not changed" in response.content.decode()
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.OPEN


def test_resolve_records_outcome_and_note(client, account_manager, mine_standard):
    login(client, account_manager).post(
        act_url(mine_standard), {"action": "resolve", "outcome": "actioned", "note": "called"}
    )
    mine_standard.refresh_from_db()
    assert (mine_standard.status, mine_standard.outcome) == (Escalation.Status.RESOLVED, "actioned")
    assert mine_standard.events.get(kind="resolved").note == "called"


def test_dismiss_defaults_to_false_alarm(client, account_manager, mine_standard):
    login(client, account_manager).post(act_url(mine_standard), {"action": "dismiss"})
    mine_standard.refresh_from_db()
    assert (mine_standard.status, mine_standard.outcome) == (Escalation.Status.DISMISSED, "false_alarm")


@pytest.mark.parametrize(("action", "outcome"), [("approve", "approved"), ("reject", "rejected")])
def test_executive_decides_from_the_page_after_confirming(client, executive, mine, action, outcome):
    login(client, executive)
    # The button goes to the confirmation step first: nothing is recorded by one click.
    first = client.post(act_url(mine), {"action": action, "next": detail_url(mine), "note": "ok"})
    confirm = reverse("escalation-confirm", args=[mine.pk, action])
    assert first.status_code == 302 and first["Location"].startswith(confirm)
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.OPEN and not mine.events.exists()
    page = client.get(first["Location"]).content.decode()
    assert "Change order amount $60,000.00 is at least $50,000.00" in page  # why, from the evidence
    assert f'name="confirmed" value="{action}"' in page
    assert 'value="ok"' in page  # the note typed before the step is kept
    done = client.post(act_url(mine), {"action": action, "confirmed": action, "next": detail_url(mine)})
    assert done["Location"] == detail_url(mine)
    mine.refresh_from_db()
    assert (mine.status, mine.outcome) == (Escalation.Status.RESOLVED, outcome)
    body = client.get(detail_url(mine)).content.decode()
    assert f'<span class="what">{outcome.capitalize()}</span>' in body
    assert 'by Elena Park <span class="muted">(elena)</span>' in body


def test_account_manager_cannot_approve(client, account_manager, mine):
    login(client, account_manager)
    for data in ({"action": "approve"}, {"action": "approve", "confirmed": "approve"}):
        response = client.post(act_url(mine), data, follow=True)
        assert response.status_code == 200
        assert "was not changed" in response.content.decode()
    assert client.get(reverse("escalation-confirm", args=[mine.pk, "approve"])).status_code == 403
    mine.refresh_from_db()
    assert mine.status == Escalation.Status.OPEN and not mine.events.exists()


def test_act_does_not_redirect_off_site(client, account_manager, mine):
    response = login(client, account_manager).post(
        act_url(mine), {"action": "acknowledge", "next": "https://evil.example/phish"}
    )
    assert response["Location"] == detail_url(mine)


def test_act_returns_to_the_page_it_came_from(client, account_manager, mine):
    back = reverse("my-escalations") + "?status=open"
    response = login(client, account_manager).post(act_url(mine), {"action": "acknowledge", "next": back})
    assert response["Location"] == back


# --- the account manager's queue ------------------------------------------------------------------


def test_my_escalations_lists_only_my_clients_open_first(client, account_manager, other_account_manager):
    my_client = make_client(owner_user=account_manager)
    # No recorded conditions: each card says its stored summary, which names it here.
    said = functools.partial(make_escalation, evidence={"facts": {}})
    closed = said(
        client=my_client,
        status=Escalation.Status.RESOLVED,
        summary="closed one",
        fired_ago=dt.timedelta(minutes=1),
        route="standard",
    )
    acked = said(
        client=my_client,
        status=Escalation.Status.ACKNOWLEDGED,
        summary="acked one",
        severity="low",
        route="standard",
    )
    open_ = said(
        client=my_client,
        summary="open one",
        severity="critical",
        fired_ago=dt.timedelta(days=2),
        route="standard",
    )
    said(client=make_client(owner_user=other_account_manager), summary="someone else's")
    body = login(client, account_manager).get(reverse("my-escalations")).content.decode()
    assert "someone else&#x27;s" not in body and "someone else's" not in body
    assert body.index(open_.summary) < body.index(acked.summary) < body.index(closed.summary)
    # actions per row: acknowledge only while open, none once closed
    assert body.count('value="acknowledge"') == 1
    assert body.count('value="resolve"') == 2


def test_my_escalations_status_filter(client, account_manager):
    my_client = make_client(owner_user=account_manager)
    said = functools.partial(make_escalation, evidence={"facts": {}})  # cards say their summary
    said(client=my_client, status=Escalation.Status.RESOLVED, summary="closed one")
    said(client=my_client, summary="open one")
    login(client, account_manager)
    body = client.get(reverse("my-escalations"), {"status": "resolved"}).content.decode()
    assert "closed one" in body and "open one" not in body
    body = client.get(reverse("my-escalations"), {"status": "bogus"}).content.decode()
    assert "closed one" in body and "open one" in body


@pytest.mark.parametrize("persona", ["executive", "ops_manager", "outsider"])
def test_my_escalations_is_for_account_managers(client, request, persona):
    assert login(client, request.getfixturevalue(persona)).get(reverse("my-escalations")).status_code == 403


def test_my_escalations_redirects_anonymous_to_login(client):
    response = client.get(reverse("my-escalations"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_my_escalations_query_count_is_constant(client, account_manager, django_assert_max_num_queries):
    my_client = make_client(owner_user=account_manager)
    version = make_rule()
    project = ProjectFactory(client=my_client)
    for _ in range(30):
        make_escalation(client=my_client, project=project, version=version)
    login(client, account_manager)
    with django_assert_max_num_queries(12):
        response = client.get(reverse("my-escalations"))
    assert response.content.decode().count('value="acknowledge"') == 30


def test_my_escalations_escapes_client_name(client, account_manager):
    make_escalation(client=make_client(owner_user=account_manager, name=XSS), summary=XSS)
    body = login(client, account_manager).get(reverse("my-escalations")).content.decode()
    assert XSS not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_my_escalations_and_the_confirmation_say_why_from_the_evidence(client, account_manager, executive):
    """An escalation opened before the wording change stored formula text as its summary: the account
    manager's list and the approver's confirmation say why in sentences from its evidence, as its page
    does."""
    formula = "change_order.amount 60,000.00 ≥ 50,000.00; project.margin_pct 9.5 < 12"
    why = "Change order amount $60,000.00 is at least $50,000.00; Margin 9.5% is below 12%"
    mine = make_escalation(client=make_client(owner_user=account_manager), summary=formula)
    body = login(client, account_manager).get(reverse("my-escalations")).content.decode()
    assert formula not in body and "project.margin_pct" not in body and why in body
    body = login(client, executive).get(reverse("escalation-confirm", args=[mine.pk, "approve"]))
    assert formula not in body.content.decode() and why in body.content.decode()


def test_the_escalation_page_explains_the_learned_risk_of_its_project(client, executive):
    from apps.learning.models import LearningSettings, RiskModel

    LearningSettings.objects.update_or_create(pk=1, defaults={"min_labels_for_ranking": 10})
    RiskModel.objects.create(
        version=1, trained_at=timezone.now(), n_samples=50, n_positive=20, features=["project.margin_pct"],
        intercept=0.0, means={"project.margin_pct": 20.0}, scales={"project.margin_pct": 10.0},
        coefficients={"project.margin_pct": -1.0, "project.margin_pct__missing": 0.5},
    )  # fmt: skip
    escalation = make_escalation()
    client.force_login(executive)
    body = client.get(reverse("escalation-detail", args=[escalation.pk])).content.decode()
    assert 'id="learned-risk"' in body and "risk model v1" in body
    assert "Margin has no value: pushes it up ↑" in body and 'href="/learning/model/"' in body
