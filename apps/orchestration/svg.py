"""The orchestration map drawn as one server-rendered SVG: six columns of boxes joined by curves.

No JavaScript and no inline style (the CSP allows neither): colours come from classes in
``orchestration/map.css`` and every health colour is also written as a word in the box. Each box is an
``<a>`` (keyboard-focusable, named by ``aria-label``) that focuses the map on that node; the lines and
headings form one ``role="img"`` group with its own title and description, and the page's tables carry
the same numbers and links. Every text that goes into the markup passes through ``escape``.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .map import INFO, KIND_TITLES, KINDS, WINDOW_WORDS, Graph, Node

NODE_W, NODE_H, ROW_GAP, COL_GAP = 200, 42, 8, 44
PAD, HEAD = 8, 30
LABEL_CHARS, LINE_CHARS = 28, 36
HEALTH_MARK = {"ok": "✓", "warning": "▲", "failing": "✖", "idle": "○", "disabled": "–", "info": ""}


def node_href(graph: Graph, node_id: str) -> str:
    return "?" + urlencode({"window": graph.window, "focus": node_id})


def health_word(node: Node) -> str:
    """The health in one or two words (``Stale``, ``Failing``), the part of ``health_text`` before a colon."""
    return node.health_text.split(":", 1)[0]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def describe(node: Node) -> str:
    """What a screen reader says for a box: kind, name, health and counts."""
    kind = KIND_TITLES[node.kind].removesuffix("s").lower()
    parts = [f"{kind} {node.label}"]
    if node.detail and node.detail != node.label:
        parts.append(node.detail)
    if node.health != INFO:
        parts.append(node.health_text)
    parts.append(node.summary)
    return ", ".join(parts)


def render(graph: Graph, focus: str | None = None) -> SafeString:
    columns = [graph.column(kind) for kind in KINDS]
    rows = max((len(c) for c in columns), default=0)
    step = NODE_H + ROW_GAP
    width = 2 * PAD + len(KINDS) * NODE_W + (len(KINDS) - 1) * COL_GAP
    height = HEAD + max(rows, 1) * step + PAD
    place: dict[str, tuple[float, float]] = {}
    for i, column in enumerate(columns):
        x = PAD + i * (NODE_W + COL_GAP)
        top = HEAD + (rows - len(column)) * step / 2
        for j, node in enumerate(column):
            place[node.id] = (x, top + j * step)
    path = graph.path_through(focus) if focus else set()

    totals = graph.totals()
    title = f"Orchestration map, {WINDOW_WORDS[graph.window]}"
    desc = (
        f"{totals['systems']} systems, {totals['streams']} streams, {totals['facts']} facts, "
        f"{totals['rules']} published rules, {totals['actions']} actions. In the window: "
        f"{totals['records']:,} records synced, {totals['evaluations']:,} evaluations, "
        f"{totals['matches']:,} matches, {totals['deliveries_sent']:,} deliveries sent, "
        f"{totals['deliveries_failed']:,} failed, {totals['deliveries_dead']:,} dead, "
        f"{totals['outcomes']:,} escalations closed with an outcome. "
        f"{totals['failing']} nodes failing, {totals['warning']} with a warning. "
        "The tables below the map hold the same numbers."
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="orchestration-map{" focused" if path else ""}" '
        f'viewBox="0 0 {width} {height:.0f}" width="{width}" height="{height:.0f}" role="group" '
        'aria-labelledby="map-title" aria-describedby="map-desc">',
        f'<title id="map-title">{escape(title)}</title>',
        f'<desc id="map-desc">{escape(desc)}</desc>',
        '<g class="edges" role="img" aria-labelledby="map-lines-title map-lines-desc">',
        f'<title id="map-lines-title">{escape(title)}: how each column feeds the next</title>',
        '<desc id="map-lines-desc">Lines from systems to their streams, streams to the facts they feed, '
        "facts to the rules that read them, rules to their actions and actions to the outcomes of the "
        "escalations they were sent for; thicker lines carried more in the window.</desc>",
    ]
    for i, kind in enumerate(KINDS):
        x = PAD + i * (NODE_W + COL_GAP)
        out.append(f'<text class="column-title" x="{x}" y="18">{escape(KIND_TITLES[kind])}</text>')
    for edge in graph.edges:
        if edge.source not in place or edge.target not in place:
            continue
        (x1, y1), (x2, y2) = place[edge.source], place[edge.target]
        x1, y1, y2 = x1 + NODE_W, y1 + NODE_H / 2, y2 + NODE_H / 2
        mid = (x1 + x2) / 2
        classes = ["edge"]
        if not edge.configured:
            classes.append("traffic-only")
        if path:
            classes.append("on-path" if edge.source in path and edge.target in path else "dim")
        if edge.count:
            classes.append("carried")
        stroke = 1.2 + (min(3.5, math.log10(edge.count + 1)) if edge.count else 0)
        out.append(
            f'<path class="{" ".join(classes)}" stroke-width="{stroke:.1f}" '
            f'd="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"/>'
        )
    out.append("</g>")

    out.append('<g class="nodes">')
    for index, node in enumerate(graph.nodes):
        left, y = place[node.id]
        classes = ["node", f"kind-{node.kind}", f"health-{node.health}"]
        if path:
            classes.append("focus" if node.id == focus else "related" if node.id in path else "dim")
        mark = HEALTH_MARK.get(node.health, "")
        current = ' aria-current="true"' if node.id == focus else ""
        label = _clip(node.label, LABEL_CHARS)
        second = node.summary if node.health == INFO else f"{mark} {health_word(node)} · {node.summary}"
        line = _clip(second, LINE_CHARS)
        out.append(
            f'<a id="node-{index}" class="{" ".join(classes)}" href="{escape(node_href(graph, node.id))}" '
            f'data-node="{escape(node.id)}" aria-label="{escape(describe(node))}"{current}>'
            f"<title>{escape(describe(node))}</title>"
            f'<rect class="box" x="{left:.0f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="5"/>'
            f'<rect class="bar" x="{left:.0f}" y="{y:.1f}" width="6" height="{NODE_H}" rx="2"/>'
            f'<text class="label" x="{left + 12:.0f}" y="{y + 17:.1f}">{escape(label)}</text>'
            f'<text class="line" x="{left + 12:.0f}" y="{y + 33:.1f}">{escape(line)}</text>'
            "</a>"
        )
    out.append("</g></svg>")
    return mark_safe("".join(out))  # noqa: S308 - every interpolated text above is escaped
