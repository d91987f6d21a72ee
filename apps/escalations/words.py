"""Outbox actions and their targets in words, for the escalation page, admin and emails.

``note_crm → 1:5100145159`` says nothing to a person; ``Note in CRM → Acme Builders`` does. Targets are
stored as the action needs them (an address, ``connection:record``); this says whom or what they are.
"""

from __future__ import annotations

from typing import Any, Final

ACTION_WORDS: Final = {
    "email_account_manager": "Email to the account manager",
    "email_executives": "Email to the executives",
    "email_group": "Email to a group",
    "email_address": "Email",
    "flag_dashboard": "Flag on the dashboard",
    "note_crm": "Note in CRM",
    "note_accounting": "Note in accounting",
    "escalate_pm": "RFI in the PM system",
    "webhook": "Webhook",
    "notify_stakeholder": "Notice of what someone did",
    "digest": "Digest email",
    "approval_writeback": "Decision written back to the PM system",
}


def action_words(action: object) -> str:
    name = str(action or "")
    return ACTION_WORDS.get(name, name.replace("_", " ").capitalize())


def target_words(action: object, target: object, escalation: Any = None) -> str:
    """Whom or what an outbox row reaches, in words: an address as it is, an upstream record as the
    client or project it is about, the dashboard as the project it flags."""
    name, text = str(action or ""), str(target or "")
    client = getattr(escalation, "client", None)
    project = getattr(escalation, "project", None)
    if name in ("note_crm", "note_accounting") and client is not None:
        return str(client.name)
    if name in ("escalate_pm", "flag_dashboard") and project is not None:
        return f"{project.number} {project.name}".strip()
    if name == "approval_writeback":
        return str(getattr(escalation, "subject_label", "") or text)
    if name == "webhook":
        return f"endpoint “{text}”"
    return text
