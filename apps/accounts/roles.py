"""The four roles of SPEC as Django groups, and the checks views use."""

from __future__ import annotations

from typing import Any

OPERATIONS = "Operations managers"
EXECUTIVES = "Executives"
ACCOUNT_MANAGERS = "Account managers"
ADMINISTRATORS = "Administrators"
ROLES = (OPERATIONS, EXECUTIVES, ACCOUNT_MANAGERS, ADMINISTRATORS)

# Model permissions per role (app_label.codename). Administrators are superusers-in-all-but-name.
_CONFIG_MODELS = ["connectors.connection", "rules.rule", "entities.sourceobject"]
_CONFIG_MODELS += ["entities.matchcandidate", "entities.resolutionsettings", "quality.finding"]
# What operations managers tune: escalation policies, rule settings, the learning loop's knobs.
_CONFIG_MODELS += ["escalations.escalationpolicy", "escalations.policylevel", "rules.rulessettings"]
_CONFIG_MODELS += ["learning.learningsettings", "learning.thresholdsuggestion"]
# People's own noise settings, which operators adjust for them (an executive drowning in email).
_CONFIG_MODELS += ["accounts.notificationsettings"]
# Operator-defined facts (each save is a new version, so "change" never rewrites one).
_CONFIG_MODELS += ["rules.customfact"]
_VIEW_ALL = [
    "entities.client",
    "entities.project",
    "entities.changeorder",
    "entities.milestone",
    "entities.submittal",
    "entities.vendor",
    "entities.financialline",
    "entities.crmowner",
    "entities.sourceobject",
    *["entities.matchcandidate", "entities.resolutionsettings", "quality.finding", "quality.volumebaseline"],
    "rules.rule",
    "rules.ruleversion",
    "rules.decision",
    "rules.evaluationrun",
    "rules.subjectstate",
    "escalations.escalation",
    "escalations.escalationevent",
    "escalations.delivery",
    "connectors.connection",
    "connectors.syncrun",
    "connectors.streamstate",
    "connectors.quarantinedrecord",
    "connectors.schemadrift",
    "connectors.webhookdelivery",
    "audit.auditentry",
    *["escalations.escalationpolicy", "escalations.policylevel", "escalations.suppressednotification"],
    *["rules.rulessettings", "rules.shadowrun", "accounts.notificationsettings"],
    *["learning.learningsettings", "learning.shadowsample", "learning.thresholdsuggestion"],
    *["learning.riskmodel", "learning.riskscore", "learning.ruleanalytics"],
    *["rules.customfact", "rules.customfactversion"],
]


def role_permissions() -> dict[str, list[str]]:
    views = [f"{m.split('.')[0]}.view_{m.split('.')[1]}" for m in _VIEW_ALL]
    edit_config = [
        f"{m.split('.')[0]}.{verb}_{m.split('.')[1]}" for m in _CONFIG_MODELS for verb in ("add", "change")
    ]
    return {
        OPERATIONS: [*views, *edit_config, "rules.change_subjectstate", "escalations.change_escalation"],
        EXECUTIVES: [*views, "escalations.change_escalation"],
        ACCOUNT_MANAGERS: [
            "entities.view_client",
            "entities.view_project",
            "escalations.view_escalation",
            "escalations.change_escalation",
        ],
        ADMINISTRATORS: [
            *views,
            *edit_config,
            "connectors.delete_connection",
            "rules.delete_rule",
            "escalations.change_escalation",
            "escalations.change_delivery",
        ],
    }


def in_role(user: object, *roles: str) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if getattr(user, "is_superuser", False):
        return True
    return user.groups.filter(name__in=roles).exists()  # type: ignore[attr-defined]


def can_see_all_escalations(user: object) -> bool:
    return in_role(user, OPERATIONS, EXECUTIVES, ADMINISTRATORS)


# The roles that may decide approvals (besides superusers).
DECIDERS = (EXECUTIVES, ADMINISTRATORS)


def can_decide_approvals(user: object) -> bool:
    return in_role(user, *DECIDERS)


def ensure_roles(sender: object = None, **_: object) -> None:
    """Create the four groups with their permissions (idempotent).

    Runs on ``post_migrate``, which Django also sends after ``flush`` (between transactional tests), so
    the roles exist in every fresh database, test databases included. Django sends it once per app with
    models, each app's permissions created in its turn: only the last app's signal sees them all, so the
    others are skipped (16 runs of ~200 queries took 2.6-2.9 s of every flush); called without a sender,
    it runs.
    """
    from django.apps import apps
    from django.contrib.auth.models import Group, Permission

    if sender is not None and sender is not _last_app_with_models(apps):
        return
    wanted = {name: [p.split(".") for p in perms] for name, perms in role_permissions().items()}
    codenames = {codename for pairs in wanted.values() for _, codename in pairs}
    found = {
        (p.content_type.app_label, p.codename): p
        for p in Permission.objects.filter(codename__in=codenames).select_related("content_type")
    }
    for name, pairs in wanted.items():
        group, _created = Group.objects.get_or_create(name=name)
        group.permissions.set([found[(a, c)] for a, c in pairs if (a, c) in found])


def _last_app_with_models(apps: Any) -> object:
    """The app config Django sends ``post_migrate`` for last (``emit_post_migrate_signal``'s order)."""
    return [config for config in apps.get_app_configs() if config.models_module is not None][-1]
