"""Pages of the learning loop: report a miss, and what Fulcrum learned."""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.accounts.roles import ADMINISTRATORS, EXECUTIVES, OPERATIONS, in_role

from .forms import MissForm
from .misses import can_report, miss_report
from .models import ReportedMiss


@login_required
def miss_report_view(request: HttpRequest) -> HttpResponse:
    """GET: the form (prefilled from ``?subject_type=&subject_id=``); POST: record the miss."""
    if not can_report(request.user):
        raise PermissionDenied("Your role may not report misses.")
    if request.method == "POST":
        form = MissForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            day = data["missed_at"]
            missed_at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC) if day is not None else None
            try:
                miss = miss_report(
                    subject_type=data["subject_type"],
                    subject_id=data["subject_id"],
                    outcome=data["outcome"],
                    missed_at=min(missed_at, dt.datetime.now(dt.UTC)) if missed_at else None,
                    rule=data["rule"],
                    note=data["note"],
                    actor=request.user,
                )
            except PermissionDenied:
                form.add_error(None, "You may report misses only on your own clients' subjects.")
                return render(request, "learning/report_miss.html", {"form": form}, status=403)
            except ValidationError as exc:
                form.add_error(None, "; ".join(exc.messages))
            else:
                messages.success(
                    request,
                    f"Miss recorded on {miss.subject_label}: "
                    "it will count when thresholds are next suggested.",
                )
                return redirect("learning-report-miss")
        return render(request, "learning/report_miss.html", {"form": form}, status=400)
    form = MissForm(initial={k: v for k, v in request.GET.items() if k in ("subject_type", "subject_id")})
    recent = ReportedMiss.objects.select_related("rule", "reported_by")
    if not in_role(request.user, OPERATIONS, EXECUTIVES, ADMINISTRATORS):
        recent = recent.filter(reported_by_id=request.user.pk)  # an account manager sees their own
    return render(request, "learning/report_miss.html", {"form": form, "recent": recent[:20]})
