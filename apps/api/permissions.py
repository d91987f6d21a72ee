"""Who may call what: the SPEC roles, the model permissions the roles carry, and a few stricter checks.

Object-level scoping (an account manager sees only their clients' rows) is done by the viewsets'
querysets, so a probe of someone else's object answers 404, not 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from apps.accounts.roles import ADMINISTRATORS, can_decide_approvals
from apps.dashboard.queries import roles_of


class RolePermission(BasePermission):
    """Signed in, in one of the four roles, and holding the model permission for the method.

    Reading needs ``view_<model>``; any write needs ``change_<model>`` (only the escalation actions and
    the connection resync write, and both add a stricter check of their own).
    """

    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated or not roles_of(user):
            return False
        model = view.get_queryset().model
        verb = "view" if request.method in SAFE_METHODS else "change"
        return bool(user.has_perm(f"{model._meta.app_label}.{verb}_{model._meta.model_name}"))


class IsAdministrator(BasePermission):
    """Operations that touch configuration or upstream systems: administrators only."""

    message = "Only administrators may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return ADMINISTRATORS in roles_of(request.user)


class CanDecideApprovals(BasePermission):
    """Approve / reject of executive-routed items: executives (and administrators)."""

    message = "Only executives approve or reject."

    def has_permission(self, request: Request, view: Any) -> bool:
        return can_decide_approvals(request.user)
