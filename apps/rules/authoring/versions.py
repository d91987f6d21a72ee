"""Writes on a rule's draft from the admin: save it, restore a published version into it."""

from __future__ import annotations

import copy
from typing import Any

from django.db import transaction

from apps.audit.services import Actor, audit_record
from apps.rules.models import Rule, RuleVersion


@transaction.atomic
def rule_draft_save(*, rule: Rule, draft: dict[str, Any], enabled: bool, actor: Actor) -> Rule:
    """Store a validated draft (``RuleSpec.to_dict()``); creates the rule when it has no pk yet.

    The rule's name and subject type follow the draft only until a version is published: after that
    they describe the live version (``live_versions`` files rules by subject type), and publishing
    updates them.
    """
    created = rule.pk is None
    rule.draft = draft
    rule.enabled = enabled
    if created:
        rule.key = draft["key"]
    if rule.live_version_id is None:
        rule.name = draft["name"]
        rule.subject_type = draft["subject"]
    if created:
        rule.save()
    else:
        rule.save(update_fields=["draft", "enabled", "name", "subject_type", "updated_at"])
    audit_record(
        action="rule.created" if created else "rule.draft_saved",
        actor=actor,
        object_type="rule",
        object_id=rule.key,
        data={"draft": draft, "enabled": enabled},
    )
    return rule


@transaction.atomic
def rule_restore(*, rule: Rule, version: RuleVersion, actor: Actor) -> Rule:
    """Copy ``version``'s spec into the rule's draft; the versions and the live version stay as they
    are, so the restore goes live only when someone publishes it."""
    if version.rule_id != rule.pk:
        raise ValueError(f"version {version.pk} belongs to another rule than {rule.key}")
    rule = Rule.objects.select_for_update().get(pk=rule.pk)
    rule.draft = copy.deepcopy(version.spec)
    rule.save(update_fields=["draft", "updated_at"])
    audit_record(
        action="rule.restored",
        actor=actor,
        object_type="rule",
        object_id=rule.key,
        data={"version": version.number, "spec_hash": version.spec_hash},
    )
    return rule
