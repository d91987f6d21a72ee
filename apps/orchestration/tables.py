"""The tables behind the map, built in Python: the same numbers as the SVG, one table per column.

The template engine cost most of the page's CPU on these ~100 rows (a loop tag, a dozen lookups and
filters per row), as it did for the dashboard's tables (``apps/dashboard/rows.py``). Rows built from
plain strings cost a fraction of that. Every value is escaped here (never mark synced text safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from . import svg
from .map import INFO, KIND_TITLES, KINDS, WINDOW_WORDS, Graph, Node, duration_words

Cell = Callable[[Node], Any]
HEAD, NUMERIC_HEAD = '<th scope="col">{}</th>', '<th scope="col" class="num">{}</th>'


def _count(key: str) -> Cell:
    return lambda node: node.counts.get(key)


def _lag(node: Node) -> str:
    lag = node.counts.get("lag_seconds")
    return "never synced" if lag is None else duration_words(float(lag))


# Per column of the map, the table behind it: (heading, cell, numeric).
TABLES: dict[str, list[tuple[str, Cell, bool]]] = {
    "system": [
        ("Kind", lambda n: n.detail, False),
        ("Streams", _count("streams"), True),
        ("Records synced", _count("records"), True),
        ("Webhooks received", _count("webhooks"), True),
        ("Failed runs", _count("failed_runs"), True),
    ],
    "stream": [
        ("System", lambda n: n.detail, False),
        ("Records synced", _count("records"), True),
        ("Changed", _count("changed"), True),
        ("Runs", _count("runs"), True),
        ("Failed runs", _count("failed_runs"), True),
        ("Lag", _lag, True),
    ],
    "fact": [
        ("Meaning", lambda n: n.detail, False),
        ("Streams feeding it", _count("streams"), True),
        ("Rules reading it", _count("rules"), True),
    ],
    "rule": [
        ("Key and version", lambda n: n.detail, False),
        ("Facts read", _count("facts"), True),
        ("Evaluations", _count("evaluations"), True),
        ("Matched", _count("matched"), True),
        ("Not matched", _count("not_matched"), True),
        ("Insufficient data", _count("insufficient_data"), True),
        ("Errors", _count("error"), True),
        ("Escalations opened", _count("escalations_opened"), True),
        ("Escalations closed", _count("escalations_closed"), True),
    ],
    "action": [
        ("Name", lambda n: n.detail, False),
        ("Rules taking it", _count("rules"), True),
        ("Sent", _count("sent"), True),
        ("Failed", _count("failed"), True),
        ("Dead", _count("dead"), True),
        ("Waiting", _count("waiting"), True),
    ],
    "outcome": [
        ("Label", lambda n: n.detail, False),
        ("Escalations closed", _count("escalations"), True),
    ],
}


def cell_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def figures(node: Node) -> list[tuple[str, str]]:
    """A node's counts in words, for the focus panel: ``[(heading, value)]``."""
    return [(heading, cell_text(cell(node))) for heading, cell, _numeric in TABLES[node.kind]]


def _links(node: Node, can_configure: bool) -> str:
    if not node.links:
        return '<span class="sub">built in</span>'
    if not can_configure:
        return " · ".join(escape(what) for what, _url in node.links)
    return " · ".join(f'<a href="{escape(url)}">{escape(what)}</a>' for what, url in node.links)


def render(graph: Graph, *, focus: str | None, can_configure: bool) -> SafeString:
    window = escape(WINDOW_WORDS[graph.window])
    out: list[str] = []
    for kind in KINDS:
        columns = TABLES[kind]
        title = escape(KIND_TITLES[kind])
        heads = "".join((NUMERIC_HEAD if numeric else HEAD).format(escape(h)) for h, _c, numeric in columns)
        out.append(
            f'<div class="table-wrap"><table class="map-table" id="table-{kind}">'
            f'<caption>{title} <span class="count">{window}</span></caption>'
            f'<thead><tr><th scope="col">{escape(KIND_TITLES[kind][:-1])}</th>{heads}'
            '<th scope="col">Health</th><th scope="col">Configured in</th></tr></thead><tbody>'
        )
        rows = graph.column(kind)
        for node in rows:
            cells = "".join(
                f'<td class="num">{escape(cell_text(cell(node)))}</td>'
                if numeric
                else f"<td>{escape(cell_text(cell(node)))}</td>"
                for _h, cell, numeric in columns
            )
            health = ""
            if node.health != INFO:
                health = (
                    f'<span class="map-health health-{escape(node.health)}" '
                    f'title="{escape(node.health_text)}">{escape(svg.health_word(node))}</span>'
                )
            current = ' class="current"' if node.id == focus else ""
            out.append(
                f'<tr{current}><th scope="row"><a href="{escape(svg.node_href(graph, node.id))}">'
                f"{escape(node.label)}</a></th>{cells}<td>{health}</td>"
                f"<td>{_links(node, can_configure)}</td></tr>"
            )
        if not rows:
            out.append(f'<tr><td colspan="{len(columns) + 3}" class="empty">None.</td></tr>')
        out.append("</tbody></table></div>")
    return mark_safe("".join(out))  # noqa: S308 - every interpolated value above is escaped
