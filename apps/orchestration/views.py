"""``/orchestration/``: the orchestration map for executives, operations managers and administrators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.dashboard.queries import DASHBOARD_ROLES
from apps.dashboard.views import role_required

from . import svg
from .map import (
    DEFAULT_WINDOW,
    KIND_TITLES,
    KINDS,
    WINDOW_WORDS,
    WINDOWS,
    Node,
    cached_map,
    duration_words,
    parse_window,
)

# The roles that see the map: the dashboard's (executives, operations managers, administrators).
MAP_ROLES = DASHBOARD_ROLES

Cell = Callable[[Node], Any]


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


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@role_required(*MAP_ROLES)
def orchestration_map(request: HttpRequest) -> HttpResponse:
    window = parse_window(request.GET.get("window")) or DEFAULT_WINDOW
    graph = cached_map(window)
    focus_id = request.GET.get("focus") or None
    focus = graph.by_id.get(focus_id) if focus_id else None
    tables = [
        {
            "kind": kind,
            "title": KIND_TITLES[kind],
            "headings": [(h, numeric) for h, _cell_of, numeric in TABLES[kind]],
            "rows": [
                {
                    "node": node,
                    "href": svg.node_href(graph, node.id),
                    "health": svg.health_word(node),
                    "cells": [(_cell(cell(node)), numeric) for _h, cell, numeric in TABLES[kind]],
                }
                for node in graph.column(kind)
            ],
        }
        for kind in KINDS
    ]
    totals = graph.totals()
    context: dict[str, Any] = {
        "graph": graph,
        "svg": svg.render(graph, focus.id if focus else None),
        "window": window,
        "window_words": WINDOW_WORDS[window],
        "windows": [(key, WINDOW_WORDS[key], key == window) for key in WINDOWS],
        "focus": focus,
        "focus_kind": KIND_TITLES[focus.kind].removesuffix("s") if focus else "",
        "focus_rows": [(h, _cell(cell(focus)), numeric) for h, cell, numeric in TABLES[focus.kind]]
        if focus
        else [],
        "upstream": [(n, e, svg.node_href(graph, n.id)) for n, e in graph.upstream(focus.id)]
        if focus
        else [],
        "downstream": [(n, e, svg.node_href(graph, n.id)) for n, e in graph.downstream(focus.id)]
        if focus
        else [],
        "totals": totals,
        "shown": {key: f"{value:,}" for key, value in totals.items()},
        "tables": tables,
        "can_configure": bool(getattr(request.user, "is_staff", False)),
    }
    return render(request, "orchestration/map.html", context)
