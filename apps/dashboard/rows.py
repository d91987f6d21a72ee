"""The dashboard's two row-heavy tables, built in Python: the flagged projects and the approval queue.

The template engine costs about 0.3 ms a row here (some thirty variable lookups, filters, a URL reversed,
localisation, per row), which was a third of the page's CPU. Rows built from plain strings cost a tenth of
that. The markup is the template's, cell for cell; the formatting is the same filters called directly, and
every value that is not already safe HTML is escaped here (never mark synced text safe).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.template.defaultfilters import date as date_filter
from django.template.defaultfilters import floatformat, timesince_filter
from django.urls import reverse
from django.utils.formats import localize
from django.utils.safestring import SafeData, SafeString, mark_safe
from django.utils.timezone import localtime

from apps.dashboard.templatetags.fulcrum import (
    fact_value,
    get_fact,
    glance,
    oldest_age,
    positive,
    renewal_countdown,
    renewal_soon,
    severity_badge,
)
from apps.rules.engine.wording import why as why_words

# Any int the URL patterns accept: each row's URL is the page's one reversed URL with its pk swapped in.
_PK = 987654321


def _text(value: Any) -> str:
    """As the template engine prints a value: localised, escaped unless already safe HTML."""
    if isinstance(value, SafeData):
        return str(value)
    if isinstance(value, str):
        return html.escape(value, quote=True)
    if type(value) is int and not settings.USE_THOUSAND_SEPARATOR:
        return str(value)  # what localize() returns for an int without grouping, at a tenth of its cost
    return html.escape(str(localize(value)), quote=True)


class _PkUrl:
    """``reverse(name, args=[pk])`` for many pks at the cost of one reverse (the script prefix included)."""

    def __init__(self, name: str) -> None:
        self.head, self.tail = reverse(name, args=[_PK]).split(str(_PK))

    def __call__(self, pk: int) -> str:
        return f"{self.head}{int(pk)}{self.tail}"


def _why(escalation: Any) -> str:
    """Why it was flagged, in sentences from the conditions that held (as the escalation's page says it),
    from the explanation ``queries.page_projects`` fetched; the stored summary when there is none (an
    escalation opened before the wording change stored formula text there)."""
    explanation = getattr(escalation, "why_explanation", None)
    return why_words({"explanation": explanation}, str(escalation.summary or ""))


def _attention(flag: bool) -> str:
    return " attention" if flag else ""


LAST_MISSED_HERE = ' <span class="sub">including the client\'s latest</span>'
LAST_MISSED_ELSEWHERE = ' <span class="sub">the client\'s latest, on another project, was missed</span>'


def flagged_rows(projects: Iterable[Any], *, show_risk: bool) -> SafeString:
    """``<tr>``s of the flagged-projects table (``queries.page_projects`` with ``facts`` attached)."""
    detail = _PkUrl("escalation-detail")
    rows = []
    for p in projects:
        facts, worst, client = p.facts, p.worst, p.client
        owner = client.owner if client is not None else None
        renewal = client.renewal_date if client is not None else None
        missed = get_fact(facts, "project.milestones_missed")
        ar = get_fact(facts, "client.ar_overdue_amount")
        last_missed = get_fact(get_fact(facts, "client.missed_last_milestone"), "value")
        why = (
            f'<a href="{detail(worst.pk)}">{_text(worst.rule.name)}</a>\n'
            f'<div class="summary">{_text(_why(worst))}</div>\n'
            if worst
            else ""
        )
        # The project's own count next to the client's latest milestone: "0 · last one missed" read as a
        # contradiction when the missed milestone was on another of the client's projects.
        last = ""
        if last_missed:
            last = LAST_MISSED_HERE if positive(missed) else LAST_MISSED_ELSEWHERE
        client_name = (client.name if client is not None else "") or "no client"
        owned = f" · {_text(owner)}" if owner else ""
        soon = _attention(renewal_soon(renewal))
        risk = ""
        if show_risk:
            score = '<span class="sub">new</span>' if p.risk is None else _text(floatformat(p.risk, 2))
            risk = f'<td class="num">{score}</td>\n'
        rows.append(
            "<tr>\n"
            f"<td>{severity_badge(worst.severity if worst else '')}</td>\n"
            '<th scope="row">\n'
            f'<span class="project">{_text(p.number)} {_text(p.name)}</span>\n'
            f'<span class="sub">{_text(client_name)}{owned}</span>\n'
            "</th>\n"
            f'<td class="renewal{soon}">{_text(renewal_countdown(renewal))}</td>\n'
            f'<td class="num{_attention(positive(missed))}">{_text(glance(missed))}{last}</td>\n'
            f'<td class="num">{_text(glance(get_fact(facts, "project.margin_pct")))}</td>\n'
            f'<td class="num">{_text(p.open_change_orders)}</td>\n'
            f'<td class="num{_attention(positive(ar))}">{_text(glance(ar))}</td>\n'
            f'<td class="num">{_text(p.open_count)}</td>\n'
            f'<td class="why">\n{why}<div class="sub">{_text(oldest_age(facts))}</div>\n</td>\n'
            f"{risk}</tr>"
        )
    return mark_safe("\n".join(rows))  # noqa: S308 - every interpolated value is escaped above


def approval_rows(escalations: Iterable[Any], *, csrf_input: str, next_url: str) -> SafeString:
    """``<tr>``s of the approval queue, each with its approve and reject form (``csrf_input`` is the
    ``{% csrf_token %}`` markup, the same for every form of a page)."""
    detail, act = _PkUrl("escalation-detail"), _PkUrl("escalation-act")
    next_value = _text(next_url)
    rows = []
    for e in escalations:
        label = _text(e.subject_label)
        client_name = (e.client.name if e.client is not None else "") or "—"
        project = f"{_text(e.project.number)} {_text(e.project.name)}" if e.project else "—"
        evidence = e.evidence.get("facts") if isinstance(e.evidence, dict) else None
        opened = localtime(e.opened_at)  # as the template's date filter sees an aware datetime
        rows.append(
            "<tr>\n"
            f'<td><a href="{detail(e.pk)}">{label}</a></td>\n'
            f"<td>{_text(client_name)}</td>\n"
            f"<td>{project}</td>\n"
            f"<td>{severity_badge(e.severity)}</td>\n"
            f'<td class="num">{_text(fact_value(get_fact(evidence, "change_order.amount")))}</td>\n'
            f"<td>{_text(why_words(e.evidence, e.summary))}</td>\n"
            f'<td><time datetime="{_text(date_filter(opened, "c"))}">'
            f"{_text(timesince_filter(e.opened_at))} ago</time></td>\n"
            "<td>\n"
            f'<form method="post" action="{act(e.pk)}" class="action-form decide">\n'
            f"{csrf_input}\n"
            f'<input type="hidden" name="next" value="{next_value}">\n'
            '<button type="submit" name="action" value="approve" class="button approve" '
            f'aria-label="Approve {label}">Approve</button>\n'
            '<button type="submit" name="action" value="reject" class="button reject" '
            f'aria-label="Reject {label}">Reject</button>\n'
            "</form>\n"
            "</td>\n"
            "</tr>"
        )
    return mark_safe("\n".join(rows))  # noqa: S308 - every interpolated value is escaped above
