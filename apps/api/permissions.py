"""Who may call what: the SPEC roles, the model permissions the roles carry, and a few stricter checks.

Object-level scoping (an account manager sees only their clients' rows) is done by the viewsets'
querysets, so a probe of someone else's object answers 404, not 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from apps.accounts.roles import ADMINISTRATORS, EXECUTIVES, OPERATIONS, role_permissions
from apps.dashboard.queries import roles_of

SEE_ALL_ROLES = frozenset({OPERATIONS, EXECUTIVES, ADMINISTRATORS})


def sees_everything(user: Any) -> bool:
    """Executives, operations managers and administrators; account managers see their own clients'."""
    return bool(roles_of(user) & SEE_ALL_ROLES)


def role_grants(user: Any, perm: str) -> bool:
    """Whether one of the user's roles carries ``perm``.

    The groups' permissions are exactly ``role_permissions()`` (``ensure_roles`` sets them after every
    migrate), so this answers what ``user.has_perm`` would, without its two queries per request.
    """
    table = role_permissions()
    return any(perm in table[role] for role in roles_of(user))


class RolePermission(BasePermission):
    """Signed in, in one of the four roles, and holding the model permission for the method.

    Reading needs ``view_<model>``; any write needs ``change_<model>``. The writes are the escalation
    actions (scoped by the queryset; who may approve, reject, resolve or dismiss what is decided by the
    escalation services, the same on every channel) and resync (administrators only).
    """

    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated or not roles_of(user):
            return False
        # The viewset's model, without building its (scoped, querying) queryset when it names one.
        model = getattr(view, "model", None)
        if model is None and hasattr(view, "get_queryset"):
            model = view.get_queryset().model
        if model is None:  # a plain APIView relying on this default must declare its own permissions
            return False
        verb = "view" if request.method in SAFE_METHODS else "change"
        return role_grants(user, f"{model._meta.app_label}.{verb}_{model._meta.model_name}")


class IsAdministrator(BasePermission):
    """Operations that touch configuration or upstream systems: administrators only."""

    message = "Only administrators may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return ADMINISTRATORS in roles_of(request.user)
