"""One escalation's page, an account manager's queue, and the endpoint their buttons post to.

The views read through ``apps.dashboard.queries`` and change state only through the escalation services.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.accounts.roles import ACCOUNT_MANAGERS, can_decide_approvals
from apps.dashboard import queries
from apps.dashboard.views import role_required
from apps.learning.ranking import explain_project

from . import services
from .forms import EscalationActionForm, StatusFilterForm, dismiss_outcome_choices, resolve_outcome_choices
from .models import Escalation

PAGE_SIZE = 50
DONE = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "dismiss": "dismissed",
    "approve": "approved",
    "reject": "rejected",
    "note": "has your note",
}


def actions_for(escalation: Escalation, *, can_decide: bool) -> frozenset[str]:
    """The buttons to offer: what the person's role may do to the escalation in its state (services)."""
    return frozenset(services.escalation_actions(escalation, decider=can_decide))


def _action_context() -> dict:
    return {"resolve_outcomes": resolve_outcome_choices(), "dismiss_outcomes": dismiss_outcome_choices()}


def _back(request: HttpRequest, escalation: Escalation) -> str:
    back = request.POST.get("next", "") or request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("escalation-detail", args=[escalation.pk])
    return back


@login_required
def escalation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    escalation = queries.escalation_for_page(request.user, pk)
    if escalation is None:
        raise Http404("No such escalation.")
    timeline = queries.timeline(escalation)
    can_decide = can_decide_approvals(request.user)
    return render(
        request,
        "escalations/detail.html",
        {
            "escalation": escalation,
            "timeline": timeline,
            "channels": queries.delivery_channels(timeline),
            "actions": actions_for(escalation, can_decide=can_decide),
            # Say why there is no Resolve button rather than leave the person to guess.
            # The learned ranking's reasons for this project, when a usable model exists.
            "learned_risk": explain_project(escalation.project_id) if escalation.project_id else None,
            "waits_for_executive": escalation.is_open
            and not can_decide
            and services.awaits_executive_decision(escalation),
            **_action_context(),
        },
    )


@login_required
def escalation_confirm(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """The confirmation step of an approve or reject: what is decided, for how much, and that it is final.

    GET only shows it; its form posts to the act endpoint with ``confirmed``. A role that may not decide,
    or an escalation that cannot be decided, gets the reason and no form.
    """
    if action not in services.DECISIONS:
        raise Http404("Only approve and reject are confirmed.")
    escalation = queries.escalation_for_page(request.user, pk)
    if escalation is None:
        raise Http404("No such escalation.")
    refusal, status = "", 200
    try:
        services.escalation_rights_check(escalation=escalation, actor=request.user, action=action)
        if not escalation.is_open:
            raise services.TransitionError(f"it is already {escalation.status}")
    except (PermissionDenied, services.TransitionError) as exc:
        refusal, status = str(exc), 403 if isinstance(exc, PermissionDenied) else 409
    return render(
        request,
        "escalations/decide_confirm.html",
        {
            "escalation": escalation,
            "action": action,
            "decision": queries.decision_facts(escalation),
            "note": request.GET.get("note", "")[:2000],
            "next": _back(request, escalation),
            "refusal": refusal,
        },
        status=status,
    )


@require_POST
@login_required
def escalation_act(request: HttpRequest, pk: int) -> HttpResponse:
    escalation = queries.escalation_for_page(request.user, pk)
    if escalation is None:
        raise Http404("No such escalation.")
    back = _back(request, escalation)

    form = EscalationActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Escalation #{escalation.pk} was not changed: {form.error_text()}")
        return redirect(back)
    action, outcome, note = (
        form.cleaned_data["action"],
        form.cleaned_data["outcome"],
        form.cleaned_data["note"],
    )
    try:
        services.escalation_rights_check(escalation=escalation, actor=request.user, action=action)
    except (PermissionDenied, services.TransitionError) as exc:
        messages.error(request, f"Escalation #{escalation.pk} was not changed: {exc}.")
        return redirect(back)
    if action in services.DECISIONS and form.cleaned_data["confirmed"] != action:
        # One click never approves: an approve or reject from any button goes through its confirmation.
        query = urlencode({"next": back, "note": note})
        return redirect(f"{reverse('escalation-confirm', args=[escalation.pk, action])}?{query}")
    common = {"escalation": escalation, "actor": request.user, "via": "web", "note": note}
    try:
        if action == "acknowledge":
            services.escalation_acknowledge(**common)
        elif action == "resolve":
            services.escalation_resolve(outcome=outcome, **common)
        elif action == "dismiss":
            services.escalation_dismiss(outcome=outcome, **common)
        elif action == "note":
            services.escalation_note(**common)
        else:
            services.escalation_decide(approve=action == "approve", **common)
    except (PermissionDenied, services.TransitionError) as exc:
        messages.error(request, f"Escalation #{escalation.pk} was not changed: {exc}.")
    else:
        messages.success(request, f"Escalation #{escalation.pk} {DONE[action]}.")
    return redirect(back)


@role_required(ACCOUNT_MANAGERS)
def my_escalations(request: HttpRequest) -> HttpResponse:
    form = StatusFilterForm(request.GET)
    status = form.value()
    page = Paginator(queries.my_escalations(request.user, status), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    can_decide = can_decide_approvals(request.user)
    rows = [(e, actions_for(e, can_decide=can_decide) - {"note"}) for e in page.object_list]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "escalations/my_escalations.html",
        {
            "form": form,
            "status": status,
            "page": page,
            "rows": rows,
            "filter_query": query.urlencode(),
            **_action_context(),
        },
    )
