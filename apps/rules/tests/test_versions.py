"""Versions in admin: the diff between any two, and restoring one as the draft."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.rules.authoring.diff import spec_diff
from apps.rules.authoring.versions import rule_restore
from apps.rules.evaluation.services import rules_import
from apps.rules.models import Rule, RuleVersion

from .test_preview_admin import rule_yaml

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_versions():
    """v1 at 50,000; v2 at 60,000 with a name holding markup; v3 at 70,000 (live)."""
    rules_import(text=rule_yaml(amount=50000), actor="system:test")
    rules_import(
        text=rule_yaml(amount=60000).replace("on a thin margin", "<script>alert(1)</script>"),
        actor="system:test",
    )
    rules_import(text=rule_yaml(amount=70000), actor="system:test")
    return Rule.objects.get(key="big-co")


def test_diff_between_two_versions_shows_the_changed_lines_escaped(client, ops_manager, three_versions):
    rule = three_versions
    client.force_login(ops_manager)

    response = client.get(reverse("admin:rules_rule_versions", args=[rule.pk]), {"old": "1", "new": "2"})

    assert response.status_code == 200
    lines = [(line.kind, line.text) for line in response.context["diff"]]
    assert ("del", "-      - {fact: change_order.amount, op: gte, value: 50000}") in lines
    assert ("add", "+      - {fact: change_order.amount, op: gte, value: 60000}") in lines
    assert ("del", "-  name: Big change order on a thin margin") in lines
    assert ("add", "+  name: Big change order <script>alert(1)</script>") in lines
    assert ("ctx", "   subject: change_order") in lines
    page = response.content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "value: 70000" not in page  # v3 is not part of this comparison


def test_diff_of_the_same_spec_is_empty_and_default_compares_live_to_draft(
    client, ops_manager, three_versions
):
    rule = three_versions
    v3 = rule.versions.get(number=3)
    assert spec_diff(v3.spec, v3.spec, old_label="a", new_label="b") == []
    rule.draft = {**rule.draft, "severity": "critical"}
    rule.save()
    client.force_login(ops_manager)

    response = client.get(reverse("admin:rules_rule_versions", args=[rule.pk]))

    assert (response.context["old_key"], response.context["new_key"]) == ("3", "draft")
    changed = [line.text for line in response.context["diff"] if line.kind in ("add", "del")]
    assert changed == ["-  severity: high", "+  severity: critical"]


def test_restore_copies_the_version_into_the_draft_audited_and_versions_unchanged(
    client, ops_manager, three_versions
):
    rule = three_versions
    versions_before = list(RuleVersion.objects.filter(rule=rule).values_list("number", "spec_hash", "spec"))
    client.force_login(ops_manager)

    response = client.post(reverse("admin:rules_rule_restore", args=[rule.pk, 1]))

    assert response.status_code == 302
    rule.refresh_from_db()
    v1 = rule.versions.get(number=1)
    assert rule.draft == v1.spec
    assert rule.draft["when"]["all"][0]["value"] == 50000
    assert rule.live_version.number == 3  # restoring is a draft; publishing it is a separate step
    assert (
        list(RuleVersion.objects.filter(rule=rule).values_list("number", "spec_hash", "spec"))
        == versions_before
    )
    entry = AuditEntry.objects.get(action="rule.restored", object_id="big-co")
    assert entry.data == {"version": 1, "spec_hash": v1.spec_hash}
    assert entry.actor_user_id == ops_manager.pk


def test_restore_is_a_post_and_needs_change_permission(client, executive, three_versions):
    rule = three_versions
    executive.is_staff = True
    executive.save()
    client.force_login(executive)
    url = reverse("admin:rules_rule_restore", args=[rule.pk, 1])

    assert client.post(url).status_code == 403
    rule.refresh_from_db()
    assert rule.draft["when"]["all"][0]["value"] == 70000
    assert not AuditEntry.objects.filter(action="rule.restored").exists()
    versions_page = client.get(reverse("admin:rules_rule_versions", args=[rule.pk])).content.decode()
    assert "Restore as draft" not in versions_page


def test_restore_refuses_a_version_of_another_rule(three_versions):
    rules_import(text=rule_yaml(key="other"), actor="system:test")
    other = Rule.objects.get(key="other").live_version
    with pytest.raises(ValueError, match="another rule"):
        rule_restore(rule=three_versions, version=other, actor="system:test")


def test_a_draft_too_broken_to_validate_still_diffs_as_plain_yaml(three_versions):
    v3 = three_versions.versions.get(number=3)
    broken = {**v3.spec, "severity": "urgent"}

    lines = spec_diff(v3.spec, broken, old_label="v3", new_label="draft")

    changed = [line.text for line in lines if line.kind in ("add", "del")]
    assert "+  severity: urgent" in changed
