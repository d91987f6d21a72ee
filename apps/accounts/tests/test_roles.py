"""The four roles exist with exactly their permissions in every fresh database, set once per migrate."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.roles import ROLES, ensure_roles, role_permissions

pytestmark = pytest.mark.django_db


def _held() -> dict[str, set[str]]:
    return {
        g.name: {
            f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.select_related("content_type")
        }
        for g in Group.objects.filter(name__in=ROLES)
    }


def test_after_post_migrate_each_role_holds_exactly_its_permissions():
    Group.objects.filter(name__in=ROLES).delete()
    emit_post_migrate_signal(0, False, "default")
    expected = {name: set(perms) for name, perms in role_permissions().items()}
    assert _held() == expected
    every = {
        f"{p.content_type.app_label}.{p.codename}" for p in Permission.objects.select_related("content_type")
    }
    assert set().union(*expected.values()) <= every, "every permission a role names exists"


def test_a_permission_taken_away_by_hand_is_given_back_on_the_next_migrate():
    ensure_roles()
    group = Group.objects.get(name=ROLES[0])
    group.permissions.clear()
    emit_post_migrate_signal(0, False, "default")
    assert _held()[ROLES[0]] == set(role_permissions()[ROLES[0]])


def test_only_the_last_apps_signal_sets_the_roles(django_assert_max_num_queries):
    ensure_roles()
    configs = [c for c in apps.get_app_configs() if c.models_module is not None]
    with CaptureQueriesContext(connection) as earlier:
        for config in configs[:-1]:
            ensure_roles(sender=config)
    assert not earlier.captured_queries
    with django_assert_max_num_queries(20):  # one lookup of every permission, then per role a few
        ensure_roles(sender=configs[-1])
