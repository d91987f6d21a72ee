"""The executive dashboard and the landing page. Views only read: queries live in ``queries.py``."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.accounts.roles import ACCOUNT_MANAGERS, ADMINISTRATORS, EXECUTIVES
from apps.escalations.forms import DashboardFilterForm
from apps.learning.models import RiskModel
from apps.learning.ranking import pushes

from . import queries, trends

PAGE_SIZE = 50
# The dashboard reloads itself this often (paused while someone is using a form on it).
REFRESH_SECONDS = 60


def role_required(*roles: str) -> Callable:
    """Anonymous users go to the login page; signed-in users without one of ``roles`` get 403."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not queries.roles_of(request.user) & set(roles):
                raise PermissionDenied("Your role does not include this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def home(request: HttpRequest) -> HttpResponse:
    """Send each person to the page their role uses."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    roles = queries.roles_of(request.user)
    if roles & set(queries.DASHBOARD_ROLES):
        return redirect("dashboard")
    if ACCOUNT_MANAGERS in roles:
        return redirect("my-escalations")
    if request.user.is_staff:
        return redirect("admin:index")
    return render(request, "home.html")


def risk_weights(top: int = 6, model: RiskModel | None = None) -> list[tuple[str, float]]:
    """The current risk model's largest coefficients (per standard deviation of each fact): what the
    learned ranking weighs, shown beside it as its explanation."""
    model = model or RiskModel.objects.order_by("-version").only("version", "coefficients").first()
    if model is None:
        return []
    weights = sorted(model.coefficients.items(), key=lambda kv: abs(kv[1]), reverse=True)
    return [(name, float(weight)) for name, weight in weights[:top]]


@role_required(*queries.DASHBOARD_ROLES)
def dashboard(request: HttpRequest) -> HttpResponse:
    form = DashboardFilterForm(request.GET)
    filters = queries.EscalationFilters(**{k: v for k, v in form.values().items() if v not in (None, "")})
    page = Paginator(queries.flagged_projects(filters), PAGE_SIZE).get_page(request.GET.get("page"))
    projects = queries.attach_context(queries.page_projects(list(page.object_list), filters))
    # From the roles already fetched for this request (can_decide_approvals would query again).
    can_decide = bool(queries.roles_of(request.user) & {EXECUTIVES, ADMINISTRATORS})
    trend = trends.cached_trends()
    weights: list[tuple[str, float]] = []
    if any(getattr(p, "risk", None) is not None for p in projects):
        # One read of the model for its weights and for each row's own explanation (from the facts the
        # page already has): which facts pushed that project up or down.
        model = RiskModel.objects.order_by("-version").first()
        weights = risk_weights(model=model) if model else []
        for p in projects:
            p.risk_why = pushes(model, getattr(p, "facts", {})) if model else []  # type: ignore[attr-defined]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboard/dashboard.html",
        {
            "form": form,
            "filters": filters,
            "page": page,
            "projects": projects,
            "filter_query": query.urlencode(),
            "choices": queries.filter_choices(),
            "can_decide": can_decide,
            "risk_weights": weights,
            "approvals": queries.approval_queue(filters) if can_decide else [],
            "approval_limit": queries.APPROVAL_QUEUE_LIMIT,
            "trends": trend,
            "trend_rows": [(day, [flagged, *opened]) for day, flagged, opened in trend.day_rows()],
            "week_rows": [(w, [h]) for w, h in zip(trend.weeks, trend.median_resolve_hours, strict=True)][
                ::-1
            ],
            "refresh_seconds": REFRESH_SECONDS,
        },
    )
