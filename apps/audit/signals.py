"""Authentication and permission events in the audit chain.

Connected in ``AuditConfig.ready()``. Each entry is written in the transaction of the change (``audit_record``
joins the caller's transaction), so a rolled-back change leaves no entry and a committed one cannot lack it.

- ``auth.login`` / ``auth.logout`` (actor: the user) and ``auth.login_failed`` (actor: anonymous; the
  username tried, never the password).
- ``auth.user.groups_changed``, ``auth.user.permissions_changed`` (one entry per user) and
  ``auth.group.permissions_changed`` (one per group), with the ``added`` / ``removed`` names, from either
  side of the relation (``user.groups.add(g)`` and ``g.user_set.add(u)`` alike).
- ``auth.user.flags_changed`` when ``is_superuser``, ``is_staff`` or ``is_active`` change (or a user is
  created with staff or superuser rights), with ``{field: [old, new]}``.

A signal has no request, so permission changes are attributed to the actor set with :func:`audit_actor`
(a context variable: per thread and per asyncio task), else to ``system:unknown``.

Signals do not fire for ``QuerySet.update()`` or for raw SQL: grant rights through the model API.
Changes that Django's ``post_migrate`` handlers make (the code-defined roles on migrate and flush) are not
recorded: they come from code under review, and recording them would put entries into every fresh
(test) database before anything happened in it.
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextvars import ContextVar
from types import FrameType
from typing import Any

from django.contrib.auth import get_user_model, user_logged_in, user_logged_out, user_login_failed
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.core.management.sql import emit_post_migrate_signal
from django.db import models
from django.db.models.signals import m2m_changed, post_save, pre_save
from django.http import HttpRequest

from .services import Actor, audit_append_many, audit_record

UNKNOWN_ACTOR = "system:unknown"
FLAGS = ("is_superuser", "is_staff", "is_active")
_actor: ContextVar[Actor] = ContextVar("fulcrum_audit_actor", default=None)


@contextlib.contextmanager
def audit_actor(actor: Actor) -> Iterator[None]:
    """Attribute the permission and flag changes made inside the block to ``actor``.

    ``actor`` is a user (``request.user``, lazy objects welcome) or a ``"system:<job>"`` string.
    """
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> Actor:
    actor = _actor.get()
    return UNKNOWN_ACTOR if actor is None else actor


def _in_post_migrate() -> bool:
    """Whether Django's post_migrate handlers are running (on migrate and on flush) further up the stack."""
    code = emit_post_migrate_signal.__code__
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _client(request: HttpRequest | None) -> dict[str, Any]:
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    return {"ip": address} if address else {}


# Logins -------------------------------------------------------------------------------------------


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit_record(
        action="auth.login",
        actor=user,
        object_type="user",
        object_id=user.pk,
        data={"username": user.get_username(), **_client(request)},
    )


def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:  # logging out without being logged in
        return
    audit_record(
        action="auth.logout",
        actor=user,
        object_type="user",
        object_id=user.pk,
        data={"username": user.get_username(), **_client(request)},
    )


def _login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    User = get_user_model()
    username = credentials.get(User.USERNAME_FIELD, credentials.get("username"))
    username = "" if username is None else str(username)[:150]
    known = (
        User._default_manager.filter(**{User.USERNAME_FIELD: username}).values_list("pk", flat=True).first()
    )
    audit_record(
        action="auth.login_failed",
        actor=AnonymousUser(),
        object_type="user",
        object_id="" if known is None else known,
        data={"username": username, **_client(request)},
    )


# Permissions --------------------------------------------------------------------------------------


def _perm_name(permission: Permission) -> str:
    return f"{permission.content_type.app_label}.{permission.codename}"


class _Relation:
    """One auth many-to-many relation: whose rights change (``owner``) and in what (``target``)."""

    def __init__(self, owner: type[models.Model], field: str, action: str, object_type: str) -> None:
        m2m = owner._meta.get_field(field)
        assert isinstance(m2m, models.ManyToManyField)
        self.owner, self.target = owner, m2m.related_model
        self.through: type[models.Model] = m2m.remote_field.through  # type: ignore[assignment]
        self.owner_col = f"{m2m.m2m_field_name()}_id"
        self.target_col = f"{m2m.m2m_reverse_field_name()}_id"
        self.action, self.object_type = action, object_type

    def names(self, model: Any, pks: set[Any]) -> dict[Any, str]:
        if model is Permission:
            perms = Permission.objects.filter(pk__in=pks).select_related("content_type")
            return {p.pk: _perm_name(p) for p in perms}
        if model is Group:
            return dict(Group.objects.filter(pk__in=pks).values_list("pk", "name"))
        User = get_user_model()
        return dict(User._default_manager.filter(pk__in=pks).values_list("pk", User.USERNAME_FIELD))

    def pairs(self, instance: models.Model, reverse: bool, pk_set: set[Any] | None) -> set[tuple[Any, Any]]:
        """(owner pk, target pk) rows a remove/clear is about to delete (only those that exist)."""
        side, other = (self.target_col, self.owner_col) if reverse else (self.owner_col, self.target_col)
        rows = self.through._default_manager.filter(**{side: instance.pk})
        if pk_set is not None:
            rows = rows.filter(**{f"{other}__in": pk_set})
        return set(rows.values_list(self.owner_col, self.target_col))

    def record(self, pairs: set[tuple[Any, Any]], change: str) -> None:
        if not pairs:
            return
        by_owner: dict[Any, set[Any]] = defaultdict(set)
        for owner_pk, target_pk in pairs:
            by_owner[owner_pk].add(target_pk)
        owners = self.names(self.owner, set(by_owner))
        targets = self.names(self.target, {t for ts in by_owner.values() for t in ts})
        owner_key = "user" if self.object_type == "user" else "group"
        audit_append_many(
            [
                {
                    "action": self.action,
                    "object_type": self.object_type,
                    "object_id": owner_pk,
                    "data": {
                        owner_key: owners.get(owner_pk, str(owner_pk)),
                        change: sorted(targets.get(t, str(t)) for t in target_pks),
                    },
                }
                for owner_pk, target_pks in sorted(by_owner.items())
            ],
            actor=current_actor(),
        )


_RELATIONS: dict[type[models.Model], _Relation] = {}
_PENDING = "_fulcrum_audit_pending_removal"


def _m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set[Any] | None,
    **kwargs: Any,
) -> None:
    relation = _RELATIONS.get(sender)
    if relation is None or _in_post_migrate():
        return
    if action == "post_add":
        pks = pk_set or set()
        pairs = {(p, instance.pk) for p in pks} if reverse else {(instance.pk, p) for p in pks}
        relation.record(pairs, "added")
    elif action in ("pre_remove", "pre_clear"):
        pending = getattr(instance, _PENDING, {})
        pending[sender] = relation.pairs(instance, reverse, pk_set if action == "pre_remove" else None)
        setattr(instance, _PENDING, pending)
    elif action in ("post_remove", "post_clear"):
        pairs = getattr(instance, _PENDING, {}).pop(sender, set())
        relation.record(pairs, "removed")


# User flags ---------------------------------------------------------------------------------------

_OLD_FLAGS = "_fulcrum_audit_old_flags"


def _flags_saved(update_fields: Any) -> bool:
    return update_fields is None or bool(set(update_fields) & set(FLAGS))


def _user_pre_save(
    sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    instance.__dict__.pop(_OLD_FLAGS, None)  # left over by a save that failed
    if raw or instance.pk is None or instance._state.adding or not _flags_saved(update_fields):
        return  # (update_fields without flags: e.g. the last_login update on every login)
    old = sender._default_manager.filter(pk=instance.pk).values(*FLAGS).first()
    setattr(instance, _OLD_FLAGS, old)


def _user_post_save(
    sender: Any, instance: Any, created: bool, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    if raw or not _flags_saved(update_fields) or _in_post_migrate():
        return
    if created:
        if not (instance.is_superuser or instance.is_staff):
            return
        defaults = {"is_superuser": False, "is_staff": False, "is_active": True}
        changes = {f: [None, getattr(instance, f)] for f in FLAGS if getattr(instance, f) != defaults[f]}
    else:
        old = instance.__dict__.pop(_OLD_FLAGS, None)
        if old is None:
            return
        changes = {f: [old[f], getattr(instance, f)] for f in FLAGS if old[f] != getattr(instance, f)}
        if not changes:
            return
    audit_record(
        action="auth.user.flags_changed",
        actor=current_actor(),
        object_type="user",
        object_id=instance.pk,
        data={"user": instance.get_username(), "created": created, "changes": changes},
    )


def connect() -> None:
    """Wire the receivers (from ``AuditConfig.ready()``); idempotent."""
    User = get_user_model()
    _RELATIONS.clear()
    for relation in (
        _Relation(User, "groups", "auth.user.groups_changed", "user"),
        _Relation(User, "user_permissions", "auth.user.permissions_changed", "user"),
        _Relation(Group, "permissions", "auth.group.permissions_changed", "group"),
    ):
        _RELATIONS[relation.through] = relation
        m2m_changed.connect(
            _m2m_changed, sender=relation.through, dispatch_uid=f"fulcrum-audit-{relation.action}"
        )
    user_logged_in.connect(_logged_in, dispatch_uid="fulcrum-audit-login")
    user_logged_out.connect(_logged_out, dispatch_uid="fulcrum-audit-logout")
    user_login_failed.connect(_login_failed, dispatch_uid="fulcrum-audit-login-failed")
    pre_save.connect(_user_pre_save, sender=User, dispatch_uid="fulcrum-audit-user-pre-save")
    post_save.connect(_user_post_save, sender=User, dispatch_uid="fulcrum-audit-user-post-save")
