"""``/orchestration/``: the orchestration map for executives, operations managers and administrators."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.dashboard.queries import DASHBOARD_ROLES
from apps.dashboard.views import role_required

from . import svg, tables
from .map import DEFAULT_WINDOW, KIND_TITLES, WINDOW_WORDS, WINDOWS, cached_map, parse_window

# The roles that see the map: the dashboard's (executives, operations managers, administrators).
MAP_ROLES = DASHBOARD_ROLES


@role_required(*MAP_ROLES)
def orchestration_map(request: HttpRequest) -> HttpResponse:
    window = parse_window(request.GET.get("window")) or DEFAULT_WINDOW
    graph = cached_map(window)
    focus_id = request.GET.get("focus") or None
    focus = graph.by_id.get(focus_id) if focus_id else None
    totals = graph.totals()
    can_configure = bool(getattr(request.user, "is_staff", False))
    context: dict[str, Any] = {
        "graph": graph,
        "svg": svg.render(graph, focus.id if focus else None),
        "window": window,
        "window_words": WINDOW_WORDS[window],
        "windows": [(key, WINDOW_WORDS[key], key == window) for key in WINDOWS],
        "focus": focus,
        "focus_kind": KIND_TITLES[focus.kind].removesuffix("s") if focus else "",
        "focus_rows": tables.figures(focus) if focus else [],
        "upstream": [(n, e, svg.node_href(graph, n.id)) for n, e in graph.upstream(focus.id)]
        if focus
        else [],
        "downstream": [(n, e, svg.node_href(graph, n.id)) for n, e in graph.downstream(focus.id)]
        if focus
        else [],
        "totals": totals,
        "shown": {key: f"{value:,}" for key, value in totals.items()},
        "tables": tables.render(graph, focus=focus.id if focus else None, can_configure=can_configure),
        "can_configure": can_configure,
    }
    return render(request, "orchestration/map.html", context)
