"""The page behind a signed email link: GET confirms, only POST acts (mail scanners prefetch links).

The recipient does not need to be logged in: the signed token names them, and the escalation services act
as their Fulcrum user (found by the email address), with the usual permission checks.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from . import queries, services
from .forms import EscalationActionForm, dismiss_outcome_choices, resolve_outcome_choices
from .links import Link, LinkError, LinkUsed, link_check, link_spent_check, recipient_user
from .models import EscalationEvent
from .services import DECISIONS

WHAT = {
    "acknowledge": "Acknowledge — you have seen it and are on it; it stays open.",
    "resolve": "Resolve — close it with the outcome you choose below.",
    "dismiss": "Dismiss — close it as not needing action, with the reason you choose below.",
    "approve": "Approve the change order — the decision is written back to the PM system.",
    "reject": "Reject the change order — the decision is written back to the PM system.",
}
DONE = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "dismiss": "dismissed",
    "approve": "approved",
    "reject": "rejected",
}


def _problem(
    request: HttpRequest, status: int, title: str, message: str, event: EscalationEvent | None = None
) -> HttpResponse:
    return render(
        request,
        "escalations/link_error.html",
        {"title": title, "message": message, "event": event},
        status=status,
    )


def _outcomes(action: str) -> list[tuple[str, str]]:
    if action == "resolve":
        return resolve_outcome_choices()
    if action == "dismiss":
        return dismiss_outcome_choices()
    return []


def _refused(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _problem(request, 403, "You may not do this", f"Nothing was done: {exc}.")


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def email_link(request: HttpRequest, token: str) -> HttpResponse:
    try:
        link = link_check(token)
    except LinkUsed as exc:
        return _problem(request, exc.status, exc.title, str(exc), exc.event)
    except LinkError as exc:
        return _problem(request, exc.status, exc.title, str(exc))
    actor = recipient_user(link.recipient)
    if actor is None:
        return _problem(
            request,
            403,
            "No Fulcrum account for this address",
            f"{link.recipient} is not the address of exactly one active Fulcrum user, so nothing was done.",
        )
    try:
        # Refused before the confirmation, not after it: the page tells the person now.
        services.escalation_rights_check(escalation=link.escalation, actor=actor, action=link.action)
    except PermissionDenied as exc:
        return _refused(request, exc)
    except services.TransitionError as exc:
        return _problem(request, 409, "This link cannot do that", f"Nothing was done: {exc}.")
    if request.method == "POST":
        return _act(request, link, actor)
    return render(
        request,
        "escalations/link_confirm.html",
        {
            "escalation": link.escalation,
            "action": link.action,
            "what": WHAT[link.action],
            "recipient": link.recipient,
            "outcomes": _outcomes(link.action),
            "decision": queries.decision_facts(link.escalation) if link.action in DECISIONS else None,
        },
    )


def _act(request: HttpRequest, link: Link, actor: AbstractBaseUser) -> HttpResponse:
    # The action comes from the signed token, never from the form: a link does one thing.
    form = EscalationActionForm(
        {
            "action": link.action,
            "outcome": request.POST.get("outcome", ""),
            "note": request.POST.get("note", ""),
        }
    )
    if not form.is_valid():
        return _problem(request, 400, "Nothing was done", form.error_text())
    escalation, outcome, note = link.escalation, form.cleaned_data["outcome"], form.cleaned_data["note"]
    common = {"escalation": escalation, "actor": actor, "via": EscalationEvent.Via.EMAIL, "note": note}
    try:
        if link.action == "acknowledge":
            services.escalation_acknowledge(**common)
        elif link.action == "resolve":
            services.escalation_resolve(outcome=outcome, **common)
        elif link.action == "dismiss":
            services.escalation_dismiss(outcome=outcome, **common)
        else:
            services.escalation_decide(approve=link.action == "approve", **common)
    except PermissionDenied as exc:
        return _refused(request, exc)
    except services.TransitionError as exc:
        # Someone acted between the page and the click: say who, when and what.
        escalation.refresh_from_db()
        try:
            link_spent_check(link)
        except LinkUsed as used:
            return _problem(request, used.status, used.title, str(used), used.event)
        return _problem(request, 409, "Nothing was done", f"Nothing was done: {exc}.")
    escalation.refresh_from_db()
    return render(
        request,
        "escalations/link_done.html",
        {"escalation": escalation, "done": DONE[link.action], "actor": actor},
    )
