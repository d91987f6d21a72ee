"""``/orchestration/``: who may open it, what the SVG and its tables say, escaping, focus and windows."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.connectors.models import StreamState, SyncRun
from apps.dashboard.security import CONTENT_SECURITY_POLICY
from apps.rules.models import Rule
from tests.factories import ConnectionFactory

from .load import fill, publish_rule

pytestmark = pytest.mark.django_db
URL = "/orchestration/"


@pytest.fixture
def company():
    now = timezone.now()
    pm = ConnectionFactory(slug="pm", kind="procore", schedule="*/15 * * * *", options={"company_id": 1})
    StreamState.objects.create(
        connection=pm, stream="change_orders", last_success_at=now - dt.timedelta(minutes=3)
    )
    for hours, seen in ((0.5, 12), (30, 300)):
        started = now - dt.timedelta(hours=hours)
        SyncRun.objects.create(
            connection=pm,
            stream="change_orders",
            status="succeeded",
            started_at=started,
            heartbeat_at=started,
            counts={"seen": seen},
        )
    publish_rule(
        "co-exec-review",
        "Change order needs executive judgment",
        "change_order",
        ["change_order.amount"],
        ["email_executives", "flag_dashboard"],
    )
    return pm


@pytest.mark.parametrize(
    ("persona", "status"),
    [
        ("ops_manager", 200),
        ("executive", 200),
        ("administrator", 200),
        ("account_manager", 403),
        ("other_account_manager", 403),
        ("outsider", 403),
    ],
)
def test_who_may_open_the_map(client, request, persona, status):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(URL).status_code == status


def test_anonymous_is_sent_to_log_in(client):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_svg_is_accessible_and_each_node_is_a_link(client, executive, company):
    html = client.force_login(executive) or client.get(URL).content.decode()
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert re.search(r'<svg [^>]*role="group" aria-labelledby="map-title" aria-describedby="map-desc"', svg)
    assert '<title id="map-title">Orchestration map, last 24 hours</title>' in svg
    assert '<g class="edges" role="img" aria-labelledby="map-lines-title map-lines-desc">' in svg
    nodes = re.findall(
        r'<a id="node-\d+" class="node kind-(\w+) [^"]*" href="([^"]+)" data-node="([^"]+)"', svg
    )
    assert {kind for kind, _h, _n in nodes} == {"system", "stream", "fact", "rule", "action", "outcome"}
    assert all(href.startswith("?window=24h&amp;focus=") for _k, href, _n in nodes)
    assert ("rule", "?window=24h&amp;focus=rule%3Aco-exec-review", "rule:co-exec-review") in nodes
    assert 'aria-label="rule Change order needs executive judgment, co-exec-review v1, Idle' in svg
    # Health is told in words too, not by the colour alone.
    assert "✓ OK · 12 records" in svg


def test_the_tables_carry_the_same_numbers_and_configuration_links(client, ops_manager, company):
    client.force_login(ops_manager)
    html = client.get(URL).content.decode()
    streams = html[html.index('id="table-stream"') :]
    streams = streams[: streams.index("</table>")]
    assert re.search(r">change_orders</a></th>\s*<td>pm</td><td class=\"num\">12</td>", streams)
    assert f'href="/admin/connectors/connection/{company.pk}/change/"' in html
    rule = Rule.objects.get(key="co-exec-review")
    assert f'href="/admin/rules/rule/{rule.pk}/change/"' in html
    assert 'href="/admin/learning/ruleanalytics/?rule=co-exec-review"' in html
    week = client.get(URL + "?window=7d").content.decode()
    assert "✓ OK · 312 records" in week
    assert client.get(URL + "?window=forever").content.decode().count("last 24 hours") >= 1


def test_executives_see_where_things_are_configured_without_admin_links(client, executive, company):
    client.force_login(executive)
    html = client.get(URL).content.decode()
    assert "/admin/rules/rule/" not in html and "Connection" in html


def test_synced_and_operator_text_is_escaped_and_no_inline_script(client, ops_manager, company):
    publish_rule("evil", '<script>alert("x")</script> & <b>', "project", ["project.margin_pct"], ["note_crm"])
    client.force_login(ops_manager)
    response = client.get(URL + "?focus=rule:evil")
    html = response.content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<script" not in html and " style=" not in html
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_focus_highlights_what_a_system_feeds_and_lists_its_neighbours(client, ops_manager, company):
    publish_rule("renewal", "Renewal close", "client", ["client.days_to_renewal"], ["note_crm"])
    client.force_login(ops_manager)
    html = client.get(URL, {"focus": f"system:{company.pk}"}).content.decode()
    assert 'class="orchestration-map focused"' in html
    assert re.search(r'class="node kind-rule [^"]* related"[^>]*data-node="rule:co-exec-review"', html)
    assert re.search(r'class="node kind-rule [^"]* dim"[^>]*data-node="rule:renewal"', html)
    panel = html[html.index('id="focus"') : html.index("</section>", html.index('id="focus"'))]
    assert "pm" in panel and 'data-node="stream:' in panel and "Connection" in panel
    rule_page = client.get(URL, {"focus": "rule:co-exec-review"}).content.decode()
    panel = rule_page[rule_page.index('id="focus"') :]
    assert 'data-node="action:email_executives"' in panel and 'data-node="fact:change_order.amount"' in panel
    # An unknown node is no focus (and no error).
    assert client.get(URL, {"focus": "rule:nope"}).status_code == 200


def test_navigation_and_admin_home_link_to_the_map(client, ops_manager, account_manager):
    client.force_login(ops_manager)
    assert 'href="/orchestration/"' in client.get(reverse("dashboard")).content.decode()
    assert 'href="/orchestration/"' in client.get(reverse("admin:index")).content.decode()
    client.force_login(account_manager)
    assert 'href="/orchestration/"' not in client.get(reverse("my-escalations")).content.decode()


def test_map_of_50_rules_and_12_streams_takes_at_most_10_queries(
    client, executive, django_assert_max_num_queries
):
    load = fill(rules=50, decisions_per_rule=20, escalations_per_rule=2)
    assert len(load.rules) == 50
    client.force_login(executive)
    with django_assert_max_num_queries(10):
        response = client.get(URL + "?window=7d")
    html = response.content.decode()
    assert html.count('class="node kind-rule') == 50
    assert html.count('class="node kind-stream') == 12
