"""The dashboard's rows built in Python (apps/dashboard/rows.py) are the template's rows: the markup the
template engine rendered for the same objects, cell for cell, escaped the same way."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import timezone

from apps.dashboard import queries
from apps.escalations.tests.test_pages import XSS, make_client, make_escalation, make_rule
from apps.learning.models import RiskScore
from tests.factories import ClientFactory, FinancialLineFactory, MilestoneFactory, ProjectFactory

from .test_pages import ESCAPED_XSS, _risk_model

pytestmark = pytest.mark.django_db

# The rows as the dashboard template wrote them before they were built in Python.
REFERENCE_FLAGGED = """{% load fulcrum %}{% for p in projects %}{% with f=p.facts %}
<tr>
  <td>{{ p.worst.severity|severity_badge }}</td>
  <th scope="row">
    <span class="project">{{ p.number }} {{ p.name }}</span>
    <span class="sub">{{ p.client.name|default:"no client" }}{% if p.client.owner %} · {{ p.client.owner }}{% endif %}</span>
  </th>
  <td class="renewal{% if p.client.renewal_date|renewal_soon %} attention{% endif %}">{{ p.client.renewal_date|renewal_countdown }}</td>
  {% with missed=f|get_fact:"project.milestones_missed" %}
  <td class="num{% if missed|positive %} attention{% endif %}">{{ missed|glance }}{% if f|get_fact:"client.missed_last_milestone"|get_fact:"value" %}{% if missed|positive %} <span class="sub">including the client's latest</span>{% else %} <span class="sub">the client's latest, on another project, was missed</span>{% endif %}{% endif %}</td>
  {% endwith %}
  <td class="num">{{ f|get_fact:"project.margin_pct"|glance }}</td>
  <td class="num">{{ p.open_change_orders }}</td>
  {% with ar=f|get_fact:"client.ar_overdue_amount" %}
  <td class="num{% if ar|positive %} attention{% endif %}">{{ ar|glance }}</td>
  {% endwith %}
  <td class="num">{{ p.open_count }}</td>
  <td class="why">
    {% if p.worst %}
      <a href="{% url 'escalation-detail' p.worst.pk %}">{{ p.worst.rule.name }}</a>
      <div class="summary">{{ p.worst|why_line }}</div>
    {% endif %}
    <div class="sub">{{ f|oldest_age }}</div>
  </td>
  {% if risk_weights %}<td class="num">{% if p.risk is None %}<span class="sub">new</span>{% else %}{{ p.risk|floatformat:2 }}{% endif %}</td>{% endif %}
</tr>
{% endwith %}{% endfor %}"""  # noqa: E501

REFERENCE_APPROVALS = """{% load fulcrum %}{% for e in approvals %}
<tr>
  <td><a href="{% url 'escalation-detail' e.pk %}">{{ e.subject_label }}</a></td>
  <td>{{ e.client.name|default:"—" }}</td>
  <td>{% if e.project %}{{ e.project.number }} {{ e.project.name }}{% else %}—{% endif %}</td>
  <td>{{ e.severity|severity_badge }}</td>
  <td class="num">{{ e.evidence.facts|get_fact:"change_order.amount"|fact_value }}</td>
  <td>{{ e|why_line }}</td>
  <td><time datetime="{{ e.opened_at|date:'c' }}">{{ e.opened_at|timesince }} ago</time></td>
  <td>
    <form method="post" action="{% url 'escalation-act' e.pk %}" class="action-form decide">
      {% csrf_token %}
      <input type="hidden" name="next" value="{{ request.get_full_path }}">
      <button type="submit" name="action" value="approve" class="button approve" aria-label="Approve {{ e.subject_label }}">Approve</button>
      <button type="submit" name="action" value="reject" class="button reject" aria-label="Reject {{ e.subject_label }}">Reject</button>
    </form>
  </td>
</tr>
{% endfor %}"""  # noqa: E501


def _same_markup(html: str) -> str:
    """Whitespace runs are one space to a browser: the Python rows do not copy the template's indentation."""
    return re.sub(r"\s+", " ", html).strip()


@pytest.fixture
def page_rows(account_manager):
    """Flagged projects covering each branch of a row: synced text with markup in it, a renewal inside
    60 days and none, overdue money, a missed last milestone, no client, an owner, learned scores."""
    version = make_rule(name=f"Rule {XSS}")
    mine = make_client(owner_user=account_manager, name=f"Client {XSS}", renewal_in_days=30)
    past = timezone.localdate() - dt.timedelta(days=20)
    troubled = ProjectFactory(client=mine, number=f"P-{XSS}", name=f'Tower "B" & {XSS}')
    FinancialLineFactory(project=troubled, amount=Decimal("100000"), balance=Decimal("20000"), due_date=past)
    MilestoneFactory(project=troubled, due_date=past)
    make_escalation(  # no recorded conditions: the row says its stored summary, escaped
        project=troubled,
        version=version,
        severity="critical",
        summary=f"Summary {XSS}",
        evidence={"facts": {}},
    )
    make_escalation(project=troubled, route="standard", severity="low")
    make_escalation(client=ClientFactory(owner=None, renewal_date=None), severity="medium")
    orphan = ProjectFactory(client=None, name="No client")
    make_escalation(project=orphan, client=make_client(), severity="high")
    for severity in ("low", "bogus"):
        make_escalation(severity=severity, fired_ago=dt.timedelta(days=3))
    filters = queries.EscalationFilters()
    rows = list(queries.flagged_projects(filters))
    return queries.attach_context(queries.page_projects(rows, filters))


def _flagged_pair(projects, risk_weights):
    reference = Template(REFERENCE_FLAGGED).render(
        Context({"projects": projects, "risk_weights": risk_weights})
    )
    built = Template("{% load fulcrum %}{% flagged_rows projects risk_weights %}").render(
        Context({"projects": projects, "risk_weights": risk_weights})
    )
    return _same_markup(reference), _same_markup(built)


def test_flagged_rows_are_the_templates_rows(page_rows):
    reference, built = _flagged_pair(page_rows, [])
    assert built == reference
    assert len(page_rows) == 5 and built.count("<tr>") == 5
    assert XSS not in built and built.count(ESCAPED_XSS) == 5  # number, name, client, rule, summary
    assert 'class="renewal attention"' in built and "no client" in built and "the client's latest" in built


def test_flagged_rows_with_learned_scores_are_the_templates_rows(page_rows):
    model = _risk_model(n_samples=500)
    for project, score in zip(page_rows, (0.125, 0.5, 0.875, 1.0), strict=False):  # the fifth is new
        RiskScore.objects.create(
            project_id=project.pk, risk_model=model, score=score, scored_at=timezone.now()
        )
        project.risk = score
    reference, built = _flagged_pair(page_rows, [("project.margin_pct", -1.25)])
    assert built == reference
    assert '<td class="num">0.13</td>' in built and '<span class="sub">new</span>' in built


def test_approval_rows_are_the_templates_rows():
    make_escalation(summary=f"Summary {XSS}", client=make_client(name=XSS), evidence={"facts": {}})
    make_escalation(severity="critical", evidence={"facts": {}}, fired_ago=dt.timedelta(days=2))
    make_escalation(evidence={"explanation": []}, fired_ago=dt.timedelta(hours=3))
    approvals = queries.approval_queue(queries.EscalationFilters())
    request = RequestFactory().get("/dashboard/", {"severity": '"><b>', "page": "2"})
    context = {"approvals": approvals, "request": request, "csrf_token": "Tok3n"}
    reference = Template(REFERENCE_APPROVALS).render(Context(context))
    built = Template("{% load fulcrum %}{% approval_rows approvals %}").render(Context(context))
    assert _same_markup(built) == _same_markup(reference)
    assert built.count('name="csrfmiddlewaretoken" value="Tok3n"') == 3
    assert XSS not in built and "no data" in built and "60,000.00 USD" in built
