"""Presentation helpers for Fulcrum's pages: words for operators, results, ages and countdowns.

Everything returns plain strings or dicts; autoescaping does the rest (never mark synced text safe).
"""

from __future__ import annotations

import datetime as dt
import functools
import html
from decimal import Decimal, InvalidOperation
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from apps.accounts.roles import ACCOUNT_MANAGERS
from apps.dashboard.queries import DASHBOARD_ROLES, roles_of
from apps.rules.engine import wording

register = template.Library()
SELECTED = mark_safe(" selected")

OPERATOR_WORDS = {
    "eq": "equals",
    "ne": "is not",
    "gt": "more than",
    "gte": "at least",
    "lt": "less than",
    "lte": "at most",
    "between": "between",
    "in": "is one of",
    "not_in": "is not one of",
    "is": "is",
    "is_null": "has no value",
    "contains": "contains",
    "all": "all of",
    "any": "any of",
    "not": "not",
}
RESULT_WORDS = {
    "true": ("Met", "met"),
    "false": ("Not met", "not-met"),
    "insufficient_data": ("Insufficient data", "insufficient"),
    "null": ("Insufficient data", "insufficient"),
    "none": ("Insufficient data", "insufficient"),
    "error": ("Error", "insufficient"),
}


@register.simple_tag(takes_context=True)
def fulcrum_nav(context: template.Context) -> dict[str, bool]:
    """Which navigation links the signed-in person gets (one role lookup per request)."""
    user = context.get("user")
    roles = roles_of(user)
    return {
        "dashboard": bool(roles & set(DASHBOARD_ROLES)),
        "my_escalations": ACCOUNT_MANAGERS in roles,
        "learned": bool(roles & set(DASHBOARD_ROLES)),
        "report_miss": bool(roles & {*DASHBOARD_ROLES, ACCOUNT_MANAGERS}),
        "admin": bool(user is not None and getattr(user, "is_staff", False)),
    }


@register.filter
def op_words(op: str) -> str:
    return OPERATOR_WORDS.get(str(op), str(op).replace("_", " "))


@register.filter
def result_words(result: Any) -> str:
    return RESULT_WORDS.get(str(result).lower(), (str(result).replace("_", " ").capitalize(), ""))[0]


@register.filter
def result_class(result: Any) -> str:
    return RESULT_WORDS.get(str(result).lower(), ("", "unknown"))[1] or "unknown"


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def format_value(value: Any, kind: str = "", unit: str = "") -> str:
    """One fact value in words (``$60,000.00``, ``11.5%``, ``45 days``, ``yes``; ``no data`` for null): the
    one formatter, ``apps/rules/engine/wording.py``, which emails and the evaluator's texts use too."""
    return wording.reading(value, kind=kind, unit=unit)


@register.filter
def fact_value(fact: Any) -> str:
    if not isinstance(fact, dict):
        return format_value(fact)
    return format_value(fact.get("value"), str(fact.get("type") or ""), str(fact.get("unit") or ""))


@register.filter
def percent(value: Any) -> str:
    number = _decimal(value)
    return "—" if number is None else wording.reading(number, kind="percent")


@register.filter
def age_words(seconds: Any) -> str:
    """How old the data was: ``synced 2 min ago``."""
    number = _decimal(seconds)
    if number is None:
        return "age unknown"
    s = float(number)
    if s < 60:
        return "synced just now"
    if s < 3600:
        return f"synced {round(s / 60)} min ago"
    if s < 86400:
        return f"synced {round(s / 3600)} h ago"
    days = round(s / 86400)
    return f"synced {days} day{'s' if days != 1 else ''} ago"


@register.filter
def renewal_countdown(renewal: dt.date | None) -> str:
    if not renewal:
        return "no renewal date"
    days = (renewal - timezone.localdate()).days
    if days > 1:
        return f"renews in {days} days"
    if days == 1:
        return "renews tomorrow"
    if days == 0:
        return "renews today"
    return f"renewal passed {-days} day{'s' if days != -1 else ''} ago"


@register.filter
def renewal_soon(renewal: dt.date | None, within: int = 60) -> bool:
    return bool(renewal) and 0 <= (renewal - timezone.localdate()).days <= int(within)  # type: ignore[operator]


@register.filter
def explanation_rows(evidence: Any) -> list[dict[str, Any]]:
    """The decision explanation as table rows, with the nesting depth of each node and formatted values."""
    if not isinstance(evidence, dict):
        return []
    facts = evidence.get("facts") or {}
    rows = []
    for node in evidence.get("explanation") or []:
        if not isinstance(node, dict):
            continue
        path, fact = str(node.get("path", "")), str(node.get("fact") or "")
        meta = facts.get(fact)
        if not isinstance(meta, dict):
            meta = {}
        kind, unit = str(meta.get("type") or ""), str(meta.get("unit") or "")
        shape = wording.shape_of(fact or None, kind, unit)
        op, expected, actual = str(node.get("op") or ""), node.get("expected"), node.get("actual")
        result = str(node.get("result") or "")
        reason = str(node.get("reason") or "")
        said = "stale" if reason == "stale" else result
        other = node.get("other")
        sentence = expected_text = actual_text = ""
        if fact and isinstance(other, str) and other:
            # A fact compared with another fact: ``expected`` is the other fact's value.
            found = facts.get(other)
            other_meta: dict[str, Any] = found if isinstance(found, dict) else {}
            other_shape = wording.shape_of(
                other, str(other_meta.get("type") or ""), str(other_meta.get("unit") or "")
            )
            sentence = wording.pair_sentence(shape, op, other_shape, actual, expected, said)
            actual_text, expected_text = wording.pair_shown(shape, op, other_shape, actual, expected)
        elif fact:
            sentence = wording.sentence(shape, op, expected, actual, said)
            expected_text = wording.written(expected, shape)
            actual_text = wording.reading(actual, shape, op=op, expected=expected)
        rows.append(
            {
                "depth": path.count("["),
                "is_group": not fact,
                "fact": fact,
                "label": shape.label if fact else "",
                "op": op,
                "expected": expected_text,
                "actual": actual_text,
                "result": result,
                "reason": reason,
                "sentence": sentence,
                "text": node.get("text") or "",
                "definitions": [
                    _definition(name, facts) for name in (fact, other) if _definition(name, facts)
                ],
            }
        )
    return rows


def _definition(name: Any, facts: Any) -> str:
    """An operator-defined fact as the decision recorded it, under the label people read: ``Pending change
    orders — custom.x (v2): count of change orders …``."""
    meta = facts.get(name) if isinstance(name, str) and isinstance(facts, dict) else None
    if not isinstance(meta, dict) or not meta.get("definition"):
        return ""
    return f"{wording.shape_of(name).label} — {name} (v{meta.get('version')}): {meta['definition']}"


@register.filter
def fact_rows(evidence: Any) -> list[dict[str, Any]]:
    """The context snapshot: each fact with its value, unit, age and source, sorted by name."""
    if not isinstance(evidence, dict) or not isinstance(evidence.get("facts"), dict):
        return []
    # A value the rule compared is shown as precisely as in its comparison (11.99%, not 12.0% beside 12%).
    compared = {
        str(node["fact"]): (str(node.get("op") or ""), node.get("expected"))
        for node in reversed(evidence.get("explanation") or [])
        if isinstance(node, dict) and node.get("fact")
    }
    rows = []
    for name, fact in sorted(evidence["facts"].items()):
        fact = fact if isinstance(fact, dict) else {"value": fact}
        op, expected = compared.get(name, ("", None))
        rows.append(
            {
                "name": name,
                "label": wording.shape_of(name).label,
                "value": wording.reading(
                    fact.get("value"),
                    wording.shape_of(name, str(fact.get("type") or ""), str(fact.get("unit") or "")),
                    op=op,
                    expected=expected,
                ),
                "age": age_words(fact.get("age_s")),
                "source": fact.get("source") or "",
                "missing": fact.get("value") is None,
            }
        )
    return rows


@register.filter
def humanize_key(value: Any) -> str:
    return str(value or "").replace("_", " ")


@register.filter
def get_fact(facts: Any, name: str) -> Any:
    """``facts|get_fact:"change_order.amount"``: fact names contain dots, which template lookups split on."""
    return facts.get(name) if isinstance(facts, dict) else None


@register.filter
def glance(fact: Any) -> str:
    """A fact for a dense table cell: its formatted value, or a dash when there is none."""
    if not isinstance(fact, dict) or fact.get("value") is None:
        return "—"
    unit = str(fact.get("unit") or "")
    # "3 count" says nothing "3" does not; the column header names what is counted.
    return format_value(fact.get("value"), str(fact.get("type") or ""), "" if unit == "count" else unit)


@register.filter
def positive(fact: Any) -> bool:
    """Whether a fact (or a bare value) is a number above zero: marks a cell for attention."""
    value = fact.get("value") if isinstance(fact, dict) else fact
    number = _decimal(value)
    return number is not None and number > 0


@register.filter
def oldest_age(facts: Any) -> str:
    """The age of the least fresh input among a row's facts, in words (``data synced 2 h ago``)."""
    if not isinstance(facts, dict):
        return "data age unknown"
    ages = [f.get("age_s") for f in facts.values() if isinstance(f, dict)]
    known = [float(a) for a in ages if a is not None]
    if not ages or len(known) < len(ages):
        return "some inputs never synced"
    return f"data {age_words(max(known))}"


@register.simple_tag
def fulcrum_admin_home() -> dict[str, Any]:
    """The operator panels of the admin home (``templates/admin/index.html``)."""
    from apps.dashboard.admin_home import admin_home

    return admin_home()


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


@register.simple_tag
def select_options(choices: Any, selected: Any) -> SafeString:
    """``<option>`` elements for (value, label) pairs, escaped; built in Python because a filter may
    list a thousand clients and the template engine costs ~50 µs per loop iteration."""
    # html.escape directly: format_html's lazy-aware escaping costs ~25 µs an option, 1,000 options a page.
    return mark_safe(  # noqa: S308 - every interpolated value is escaped here
        "".join(
            f'<option value="{_esc(value)}"{SELECTED if value == selected else ""}>{_esc(label)}</option>'
            for value, label in choices or ()
        )
    )


@register.simple_tag
def flagged_rows(projects: Any, risk_weights: Any) -> SafeString:
    """The flagged-projects table's rows (built in Python: ``apps/dashboard/rows.py`` says why)."""
    from apps.dashboard.rows import flagged_rows as build

    return build(projects or (), show_risk=bool(risk_weights))


@register.simple_tag(takes_context=True)
def approval_rows(context: template.Context, approvals: Any) -> SafeString:
    """The approval queue's rows, each form with the page's CSRF token and a way back to this page."""
    from django.template.defaulttags import CsrfTokenNode

    from apps.dashboard.rows import approval_rows as build

    request = context.get("request")
    return build(
        approvals or (),
        csrf_input=CsrfTokenNode().render(context),
        next_url=request.get_full_path() if request is not None else "",
    )


SEVERITY_ICONS = {"critical": "◆", "high": "▲", "medium": "■", "low": "▽"}


@register.filter
def severity_badge(severity: Any) -> SafeString:
    """A severity as an icon and a word, never colour alone (a filter, not an include: lists render
    one per row, and an include costs a template render each)."""
    return _severity_badge(str(severity or ""))


@functools.lru_cache(maxsize=32)  # a handful of severities; format_html costs ~20 µs a row otherwise
def _severity_badge(name: str) -> SafeString:
    return format_html(
        '<span class="badge severity-{}"><span class="badge-icon" aria-hidden="true">{}</span> {}</span>',
        name,
        SEVERITY_ICONS.get(name, "▽"),
        name.capitalize(),
    )


@register.filter
def status_badge(status: Any) -> SafeString:
    name = str(status or "")
    return format_html('<span class="status status-{}">{}</span>', name, name.capitalize())


@register.simple_tag
def trend_table_rows(rows: Any) -> SafeString:
    """``<tr>``s of (date, [numbers]) for the tables behind the charts (90 rows: built in Python)."""
    return mark_safe(  # noqa: S308 - dates are formatted here and numbers escaped
        "".join(
            f'<tr><th scope="row"><time datetime="{day.isoformat()}">{day:%b} {day.day}</time></th>'
            + "".join(f'<td class="num">{_esc("—" if n is None else _number_text(n))}</td>' for n in numbers)
            + "</tr>"
            for day, numbers in rows or ()
        )
    )


def _number_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@register.filter
def action_words(action: Any) -> str:
    """``note_crm`` → ``Note in CRM``."""
    from apps.escalations.actions import action_words as words

    return words(action)


@register.filter
def delivery_words(delivery: Any) -> str:
    """One outbox row as ``Note in CRM → Acme Builders``."""
    from apps.escalations.actions import action_words as words
    from apps.escalations.actions import target_words

    escalation = getattr(delivery, "escalation", None)
    return f"{words(delivery.action)} → {target_words(delivery.action, delivery.target, escalation)}"


@register.filter
def why_line(escalation: Any) -> str:
    """Why it was flagged, in sentences, from its evidence (the stored one-line summary otherwise)."""
    return wording.why(getattr(escalation, "evidence", None), str(getattr(escalation, "summary", "") or ""))


@register.filter
def conditions(evidence: Any) -> list[wording.Condition]:
    return wording.conditions(evidence)
