"""The executive dashboard, the landing page, the layout and the presentation helpers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.dashboard import queries
from apps.dashboard.templatetags.fulcrum import age_words, format_value, op_words, renewal_countdown
from apps.escalations.models import Escalation
from apps.escalations.tests.helpers import escalations_wipe
from apps.escalations.tests.test_pages import XSS, login, make_client, make_escalation, make_rule
from tests.factories import (
    ChangeOrderFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
)

ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"


def dashboard(browser, **params) -> str:
    response = browser.get(reverse("dashboard"), params)
    assert response.status_code == 200
    return response.content.decode()


def flagged(body: str) -> str:
    """The flagged-projects table only (the approval queue above it lists some of the same items)."""
    return body[body.index('id="flagged-h"') :]


# --- access ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["executive", "ops_manager", "administrator"])
def test_dashboard_is_for_executives_operators_and_admins(client, request, persona):
    assert login(client, request.getfixturevalue(persona)).get(reverse("dashboard")).status_code == 200


@pytest.mark.parametrize("persona", ["account_manager", "outsider"])
def test_dashboard_is_forbidden_to_other_roles(client, request, persona):
    response = login(client, request.getfixturevalue(persona)).get(reverse("dashboard"))
    assert response.status_code == 403
    assert "You cannot open this page" in response.content.decode()


def test_dashboard_sends_anonymous_to_login(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login") + "?next=/dashboard/"


@pytest.mark.parametrize(
    ("persona", "target"),
    [("executive", "/dashboard/"), ("ops_manager", "/dashboard/"), ("account_manager", "/my/escalations/")],
)
def test_home_sends_each_role_to_its_page(client, request, persona, target):
    response = login(client, request.getfixturevalue(persona)).get("/")
    assert response.status_code == 302 and response["Location"] == target


def test_home_explains_a_missing_role(client, outsider):
    assert "no Fulcrum role" in login(client, outsider).get("/").content.decode()


def test_nav_follows_the_role(client, executive, account_manager, ops_manager):
    body = dashboard(login(client, executive))
    assert (
        'href="/dashboard/"' in body
        and 'href="/my/escalations/"' not in body
        and 'href="/admin/"' not in body
    )
    body = dashboard(login(client, ops_manager))
    assert 'href="/admin/"' in body  # staff
    assert 'href="/learning/learned/"' in body and 'href="/learning/misses/report/"' in body
    body = login(client, account_manager).get(reverse("my-escalations")).content.decode()
    assert 'href="/my/escalations/"' in body and 'href="/dashboard/"' not in body
    assert 'href="/learning/learned/"' not in body and 'href="/learning/misses/report/"' in body
    # logout is a POST form with a CSRF token, never a link
    assert 'method="post" action="/accounts/logout/"' in body and "csrfmiddlewaretoken" in body


def test_login_page_renders_and_logs_in(client, executive):
    body = client.get(reverse("login")).content.decode()
    assert 'name="username"' in body and 'name="password"' in body and "csrfmiddlewaretoken" in body
    response = client.post(
        reverse("login"), {"username": executive.username, "password": "pw", "next": "/dashboard/"}
    )
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    bad = client.post(reverse("login"), {"username": executive.username, "password": "nope"})
    assert bad.status_code == 200 and 'role="alert"' in bad.content.decode()


def test_dashboard_refreshes_itself_every_minute_with_a_local_script(client, executive):
    body = dashboard(login(client, executive))
    assert 'src="/static/js/refresh.js" data-refresh-seconds="60" defer' in body
    assert '<noscript><meta http-equiv="refresh" content="60"></noscript>' in body  # without JS
    assert "http://" not in body.split("<body>")[0] and "https://" not in body.split("<body>")[0]


# --- flagged projects -----------------------------------------------------------------------------


def test_flagged_projects_rank_by_worst_severity_then_most_recent(client, executive):
    older_high = make_escalation(severity="high", fired_ago=dt.timedelta(hours=5), summary="older high")
    newer_high = make_escalation(severity="high", fired_ago=dt.timedelta(hours=1), summary="newer high")
    low = make_escalation(severity="low", fired_ago=dt.timedelta(minutes=1), summary="fresh low")
    # a medium on the same project as the critical one does not lower that project's rank
    critical = make_escalation(severity="critical", fired_ago=dt.timedelta(days=3), summary="old critical")
    make_escalation(project=critical.project, severity="medium", summary="its medium")
    closed = make_escalation(
        severity="critical", status=Escalation.Status.RESOLVED, summary="closed critical"
    )
    body = flagged(dashboard(login(client, executive)))
    order = [body.index(str(e.project)) for e in (critical, newer_high, older_high, low)]
    assert order == sorted(order)
    assert str(closed.project) not in body


def _risk_model(n_samples: int):
    from apps.learning.models import RiskModel

    version = RiskModel.objects.count() + 1
    return RiskModel.objects.create(
        version=version, trained_at=timezone.now(), n_samples=n_samples, n_positive=n_samples // 2,
        features=["project.margin_pct"], intercept=0.0, means={}, scales={},
        coefficients={"project.margin_pct": -1.25, "project.margin_pct__missing": 0.5},
    )  # fmt: skip


def test_a_usable_learned_risk_model_ranks_above_severity(client, executive):
    from apps.learning.models import RiskScore

    critical = make_escalation(severity="critical", summary="critical but low risk")
    low = make_escalation(severity="low", summary="low but high risk")
    unscored = make_escalation(severity="medium", summary="flagged since the last scoring")
    browser = login(client, executive)

    def ranked() -> list[int]:
        body = flagged(dashboard(browser))
        return sorted((critical, low, unscored), key=lambda e: body.index(str(e.project)))

    model = _risk_model(n_samples=150)  # fewer labels than the default minimum of 200: not used
    for escalation, score in ((critical, 0.1), (low, 0.9)):
        RiskScore.objects.create(
            project_id=escalation.project_id, risk_model=model, score=score, scored_at=timezone.now()
        )
    assert ranked() == [critical, unscored, low]
    assert "Ranked by severity" in dashboard(browser)
    type(model).objects.filter(pk=model.pk).update(n_samples=250)
    assert ranked() == [unscored, low, critical]  # new first, then by score
    body = dashboard(browser)
    assert "Ranked by the learned risk model" in body and "0.90" in body
    assert 'project.margin_pct</th><td class="num">-1.25</td><td>no, lowers it' in body
    # Each row says which facts pushed its project up or down (no margin synced: the gap itself does).
    assert (
        '<span class="sub risk-why" title="facts that pushed the learned risk">Margin has no value ↑</span>'
        in body
    )
    _risk_model(n_samples=400)  # a newer model whose scores are not stored yet: no stale ranking
    assert ranked() == [critical, unscored, low]


def test_flagged_project_row_shows_what_an_executive_needs(client, executive, account_manager):
    renewing = make_client(owner_user=account_manager, name="Harborview Medical Partners", renewal_in_days=45)
    project = ProjectFactory(client=renewing, number="P-7001", name="Tower B")
    worst = make_escalation(project=project, severity="critical", summary="CO 60k on a thin-margin project")
    make_escalation(
        project=project, severity="low", route="standard", summary="a lesser one", evidence={"facts": {}}
    )
    # live facts from the synced entities: 9.5 % margin, 20,000 overdue, one missed milestone
    past = timezone.localdate() - dt.timedelta(days=20)
    FinancialLineFactory(project=project, amount=Decimal("100000"), balance=Decimal("20000"), due_date=past)
    FinancialLineFactory(project=project, kind="bill", amount=Decimal("90500"))
    MilestoneFactory(project=project, due_date=past)
    ChangeOrderFactory(project=project, status="approved")  # not open: not counted
    body = flagged(dashboard(login(client, executive)))
    assert "P-7001 Tower B" in body and "Harborview Medical Partners" in body
    assert "Maria" in body  # the account manager (CrmOwner name)
    assert "renews in 45 days" in body
    assert '<td class="num">9.5%</td>' in body
    assert '<td class="num attention">$20,000.00</td>' in body
    assert '<td class="num attention">1 <span class="sub">including the client\'s latest</span></td>' in body
    assert worst.rule.name in body and WHY_IN_WORDS in body  # why, in words from its evidence
    assert f'href="/escalations/{worst.pk}/"' in body
    assert body.count('<td class="num">2</td>') == 2  # open escalations, open (pending) change orders
    assert "a lesser one" not in body  # only the worst escalation's summary


def test_context_without_synced_money_shows_dashes_not_zeros(client, executive):
    make_escalation(client=make_client())
    body = flagged(dashboard(login(client, executive)))
    assert '<td class="num">—</td>' in body  # margin: no income, so null
    assert '<td class="num">0</td>' in body  # no missed milestones
    assert "some inputs never synced" in body  # no stream has ever synced in this test database


def test_renewal_countdown_without_a_date(client, executive):
    make_escalation(client=make_client(renewal_in_days=None))
    assert "no renewal date" in dashboard(login(client, executive))


@pytest.mark.parametrize("field", ["route", "severity", "owner", "client"])
def test_filters_narrow_the_flagged_projects(client, executive, account_manager, field):
    mine = make_escalation(
        client=make_client(owner_user=account_manager), route="executive", severity="critical"
    )
    other = make_escalation(route="standard", severity="low")
    value = {
        "route": "executive",
        "severity": "critical",
        "owner": mine.client.owner_id,
        "client": mine.client_id,
    }
    body = dashboard(login(client, executive), **{field: value[field]})
    assert str(mine.project) in body and str(other.project) not in body


def test_invalid_filters_are_ignored(client, executive):
    escalation = make_escalation()
    body = dashboard(login(client, executive), route="sideways", owner="x", client="-3")
    assert str(escalation.project) in body


def _dashboard_queries(client, django_assert_max_num_queries, projects: int) -> int:
    version = make_rule()
    for i in range(projects):
        project = ProjectFactory(client=make_client())
        make_escalation(project=project, version=version, severity=["low", "high", "critical"][i % 3])
        make_escalation(project=project, route="standard", severity="medium")
        MilestoneFactory(project=project)
        FinancialLineFactory(project=project, amount=Decimal("1000"))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with django_assert_max_num_queries(15), CaptureQueriesContext(connection) as captured:
        body = dashboard(client)
    assert body.count('<th scope="row">\n') == projects  # flagged projects
    assert body.count('value="approve"') == min(projects, queries.APPROVAL_QUEUE_LIMIT)  # approval queue
    return len(captured.captured_queries)


def test_dashboard_query_count_is_capped_and_constant(client, executive, django_assert_max_num_queries):
    login(client, executive)
    few = _dashboard_queries(client, django_assert_max_num_queries, 2)
    escalations_wipe()  # the event log is append-only
    many = _dashboard_queries(client, django_assert_max_num_queries, 32)
    assert few == many


# --- the approval queue ---------------------------------------------------------------------------


def test_approval_queue_lists_executive_change_orders_for_deciders(client, executive):
    waiting = make_escalation(route="executive", summary="needs a yes or no")
    standard = make_escalation(route="standard", summary="standard route")
    body = dashboard(login(client, executive))
    queue = body[body.index("Waiting for your decision") : body.index("Flagged projects")]
    assert waiting.subject_label in queue and standard.subject_label not in queue
    assert 'value="approve"' in queue and 'value="reject"' in queue and "csrfmiddlewaretoken" in queue
    assert "$60,000.00" in queue


def test_approval_queue_is_hidden_from_operators(client, ops_manager):
    make_escalation(route="executive")
    body = dashboard(login(client, ops_manager))
    assert "Waiting for your decision" not in body and 'value="approve"' not in body


def test_executive_approves_from_the_dashboard_and_comes_back(client, executive):
    waiting = make_escalation(route="executive")
    login(client, executive)
    back = reverse("dashboard") + "?severity=high"
    act = reverse("escalation-act", args=[waiting.pk])
    first = client.post(act, {"action": "approve", "next": back})
    # The queue's button leads to the confirmation step, which comes back to the dashboard.
    assert first.status_code == 302 and "/confirm/approve/" in first["Location"]
    assert f'value="{back}"' in client.get(first["Location"]).content.decode()
    response = client.post(act, {"action": "approve", "confirmed": "approve", "next": back})
    assert response.status_code == 302 and response["Location"] == back
    waiting.refresh_from_db()
    assert (waiting.status, waiting.outcome) == (Escalation.Status.RESOLVED, Escalation.Outcome.APPROVED)
    body = dashboard(client)
    assert f"Escalation #{waiting.pk} approved." in body
    assert "Nothing is waiting for an executive decision." in body


# --- escaping -------------------------------------------------------------------------------------


def test_dashboard_escapes_synced_text(client, executive):
    make_escalation(client=make_client(name=XSS), summary=XSS, route="executive")
    body = dashboard(login(client, executive))
    assert XSS not in body
    assert body.count(ESCAPED_XSS) >= 3  # flagged row, approval queue, client filter
    assert f">{ESCAPED_XSS}</option>" in body  # the filter's options are built in Python: escaped there


def test_select_options_escape_values_and_labels():
    from apps.dashboard.templatetags.fulcrum import select_options

    html = select_options([('"><b>', XSS), (2, "Plain")], 2)
    assert html == (
        f'<option value="&quot;&gt;&lt;b&gt;">{ESCAPED_XSS}</option><option value="2" selected>Plain</option>'
    )


# --- presentation helpers (no database) -----------------------------------------------------------


def test_operator_words():
    assert [op_words(op) for op in ("gte", "lt", "not_in", "is_null", "any")] == [
        "at least",
        "less than",
        "is not one of",
        "has no value",
        "any of",
    ]


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (None, "age unknown"),
        (5, "synced just now"),
        (120.0, "synced 2 min ago"),
        (7200, "synced 2 h ago"),
        (86400 * 3, "synced 3 days ago"),
        (86400, "synced 1 day ago"),
    ],
)
def test_age_in_words(seconds, words):
    assert age_words(seconds) == words


@pytest.mark.parametrize(
    ("days", "words"),
    [
        (45, "renews in 45 days"),
        (1, "renews tomorrow"),
        (0, "renews today"),
        (-1, "renewal passed 1 day ago"),
        (-10, "renewal passed 10 days ago"),
    ],
)
def test_renewal_countdown(days, words):
    assert renewal_countdown(timezone.localdate() + dt.timedelta(days=days)) == words


@pytest.mark.parametrize(
    ("value", "kind", "unit", "text"),
    [
        ("60000.00", "money", "USD", "$60,000.00"),
        ("11.456", "percent", "%", "11.5%"),
        (45, "int", "days", "45 days"),
        (1, "int", "days", "1 day"),
        (2, "int", "count", "2"),
        (True, "bool", "", "yes"),
        (None, "money", "USD", "no data"),
        ("on_track", "text", "", "on_track"),
        (["a", "b"], "text", "", "a, b"),
        ("n/a", "money", "USD", "n/a"),
    ],
)
def test_format_value(value, kind, unit, text):
    assert format_value(value, kind, unit) == text


# --- why it was flagged, in words ----------------------------------------------------------------------

# What an escalation opened before the wording change stored as its summary.
FORMULA_SUMMARY = (
    "change_order.amount 60,000.00 ≥ 50,000.00; project.margin_pct 9.5 < 12; client.days_to_renewal"
)
WHY_IN_WORDS = (
    "Change order amount $60,000.00 is at least $50,000.00; Margin 9.5% is below 12%; "
    "45 days to renewal (at most 60)"
)


def test_rows_say_why_from_the_evidence_not_an_old_formula_summary(client, executive):
    escalation = make_escalation(summary=FORMULA_SUMMARY)  # flagged and waiting for a decision
    body = dashboard(login(client, executive))
    assert FORMULA_SUMMARY not in body and "project.margin_pct" not in body
    assert body.count(WHY_IN_WORDS) == 2  # the approval queue's row and the flagged project's row
    assert WHY_IN_WORDS in flagged(body) and str(escalation.project.name) in flagged(body)


def test_rows_without_recorded_conditions_keep_the_stored_summary(client, executive):
    make_escalation(summary="Opened by hand: the client called", evidence={"facts": {}})
    assert dashboard(login(client, executive)).count("Opened by hand: the client called") == 2
