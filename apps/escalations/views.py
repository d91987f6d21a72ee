"""One escalation's page, an account manager's queue, and the endpoint their buttons post to.

The views read through ``apps.dashboard.queries`` and change state only through the escalation services.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.accounts.roles import ACCOUNT_MANAGERS, can_decide_approvals
from apps.dashboard import queries
from apps.dashboard.views import role_required

from .forms import EscalationActionForm, StatusFilterForm, dismiss_outcome_choices, resolve_outcome_choices
from .models import Escalation

PAGE_SIZE = 50
DONE = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "dismiss": "dismissed",
    "approve": "approved",
    "reject": "rejected",
}


def actions_for(escalation: Escalation, *, can_decide: bool) -> frozenset[str]:
    """The buttons to offer; the services still decide whether the person may act."""
    if not escalation.is_open:
        return frozenset()
    actions = {"resolve", "dismiss"}
    if escalation.status == Escalation.Status.OPEN:
        actions.add("acknowledge")
    if (
        can_decide
        and escalation.route == Escalation.Route.EXECUTIVE
        and escalation.subject_type == "change_order"
    ):
        actions |= {"approve", "reject"}
    return frozenset(actions)


def _action_context() -> dict:
    return {"resolve_outcomes": resolve_outcome_choices(), "dismiss_outcomes": dismiss_outcome_choices()}


@login_required
def escalation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    escalation = queries.escalation_for_page(request.user, pk)
    if escalation is None:
        raise Http404("No such escalation.")
    timeline = queries.timeline(escalation)
    return render(
        request,
        "escalations/detail.html",
        {
            "escalation": escalation,
            "timeline": timeline,
            "channels": queries.delivery_channels(timeline),
            "actions": actions_for(escalation, can_decide=can_decide_approvals(request.user)),
            **_action_context(),
        },
    )


@require_POST
@login_required
def escalation_act(request: HttpRequest, pk: int) -> HttpResponse:
    from apps.escalations import services

    escalation = queries.escalation_for_page(request.user, pk)
    if escalation is None:
        raise Http404("No such escalation.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("escalation-detail", args=[escalation.pk])

    form = EscalationActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Escalation #{escalation.pk} was not changed: {form.error_text()}")
        return redirect(back)
    action, outcome, note = (
        form.cleaned_data["action"],
        form.cleaned_data["outcome"],
        form.cleaned_data["note"],
    )
    common = {"escalation": escalation, "actor": request.user, "via": "web", "note": note}
    try:
        if action == "acknowledge":
            services.escalation_acknowledge(**common)
        elif action == "resolve":
            services.escalation_resolve(outcome=outcome, **common)
        elif action == "dismiss":
            services.escalation_dismiss(outcome=outcome, **common)
        else:
            services.escalation_decide(approve=action == "approve", **common)
    except services.TransitionError as exc:
        messages.error(request, f"Escalation #{escalation.pk} was not changed: {exc}")
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
    rows = [(e, actions_for(e, can_decide=can_decide)) for e in page.object_list]
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
