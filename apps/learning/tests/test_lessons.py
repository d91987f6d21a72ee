"""What Fulcrum learned: hand-checked figures, intervals, and who may read the page."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.escalations.models import Escalation, EscalationEvent
from apps.learning.lessons import Share, lessons, wilson
from tests.factories import ClientFactory, FinancialLineFactory, MilestoneFactory, ProjectFactory

from .builders import escalation, fresh_streams, publish

pytestmark = pytest.mark.django_db

H = dt.timedelta(hours=1)


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson(0, 5)
    assert low == 0.0 and round(high, 4) == 0.4345
    assert wilson(0, 0) is None
    assert not Share(2, 4).enough and Share(5, 5).enough


@pytest.fixture
def history(executive, ops_manager):
    """Rule ``thin``: 8 acted on and 2 false alarms; rule ``late``: 1 acted on, 4 false alarms.
    Executive-route escalations closed by Elena after 1..8 h, standard ones by Olivia after 10 h."""
    opened = timezone.now() - dt.timedelta(days=10)
    thin = publish(
        "thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 20}]}, route="executive"
    )
    late = publish("late", {"all": [{"fact": "project.days_behind_schedule", "op": "gt", "value": 30}]})
    rows = [(thin, i, "actioned" if i < 8 else "false_alarm", (i + 1) * H) for i in range(10)]
    rows += [(late, 100 + i, "actioned" if i == 0 else "false_alarm", 10 * H) for i in range(5)]
    made = Escalation.objects.bulk_create(
        escalation(v, sid, opened=opened, closed_after=after, outcome=outcome)
        for v, sid, outcome, after in rows
    )
    EscalationEvent.objects.bulk_create(
        EscalationEvent(
            escalation=e, kind=e.status, actor="user:elena" if e.route == "executive" else "user:olivia",
            via="web", created_at=e.closed_at,
        )
        for e in made
    )  # fmt: skip
    return thin, late


def test_rules_routes_approvers_and_thresholds(history):
    found = lessons()
    rules = {r.rule_key: r for r in found.rules}
    assert (rules["thin"].acted.hits, rules["thin"].acted.n, rules["thin"].false_alarms.hits) == (8, 10, 2)
    assert (rules["late"].acted.hits, rules["late"].false_alarms.hits) == (1, 4)
    assert [r.rule_key for r in found.rules] == ["thin", "late"], "most acted-on first"
    routes = {s.key: s for s in found.routes}
    # Closed after 1..10 h on the executive route: p50 5.5 h, p90 9.1 h.
    assert routes["executive"].n == 10 and routes["executive"].p50 == pytest.approx(5.5 * 3600)
    assert routes["executive"].p90 == pytest.approx(9.1 * 3600)
    assert routes["standard"].p50 == pytest.approx(10 * 3600)
    assert [s.label for s in found.approvers] == ["Elena Park", "olivia"], "fastest first, by name"
    best = found.thresholds[0]
    assert (best.rule_key, best.version, best.live) == ("thin", 1, True)
    assert best.thresholds == [("project.margin_pct", "lt", 20)]


def test_client_traits_go_with_success_with_counts(history):
    fresh_streams()
    repeat = ClientFactory()
    for cost in ("80", "90"):  # margins 20% and 10%
        project = ProjectFactory(client=repeat, contract_value=Decimal("2000000"))
        FinancialLineFactory(project=project, kind="invoice", amount="100")
        FinancialLineFactory(project=project, kind="bill", amount=cost)
    single = ProjectFactory(client=ClientFactory(), contract_value=Decimal("50000"))
    FinancialLineFactory(project=single, kind="invoice", amount="100")
    FinancialLineFactory(project=single, kind="bill", amount="70")  # 30%
    MilestoneFactory(project=single)  # due ten days ago, not completed: a missed milestone
    traits = {t.trait: t for t in lessons().traits}
    repeat_trait = traits["repeat client (2 or more projects)"]
    assert (repeat_trait.with_trait, repeat_trait.without_trait) == (2, 1)
    assert (repeat_trait.margin_with.hits, repeat_trait.margin_with.n) == (1, 2)
    assert (repeat_trait.margin_without.hits, repeat_trait.margin_without.n) == (1, 1)
    assert (repeat_trait.on_time_with.hits, repeat_trait.on_time_without.hits) == (2, 0)
    big = traits["contract of $1,000,000 or more"]
    assert (big.with_trait, big.without_trait) == (2, 1)


def test_the_page_shows_the_lessons_to_executives(client, history, executive):
    client.force_login(executive)
    response = client.get("/learning/learned/")
    assert response.status_code == 200
    text = response.content.decode()
    assert "What Fulcrum learned" in text
    # 8 of 10 acted on: 80% with its Wilson interval 49% – 94.3%, linked to the rule's analytics.
    assert "80%" in text and "49% – 94.3%" in text and "8 of 10" in text
    assert "/admin/learning/ruleanalytics/?rule=thin" in text
    assert "Margin less than 20%" in text
    assert "too few to say" not in text.split('id="speed"')[0] or "late" in text


def test_the_page_refuses_account_managers(client, account_manager):
    client.force_login(account_manager)
    assert client.get("/learning/learned/").status_code == 403
