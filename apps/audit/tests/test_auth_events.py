from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.sql import emit_post_migrate_signal
from django.db import transaction
from django.db.models.signals import post_migrate

from apps.accounts.roles import EXECUTIVES, OPERATIONS
from apps.audit.models import AuditEntry, canonical_json
from apps.audit.services import audit_verify
from apps.audit.signals import UNKNOWN_ACTOR, audit_actor

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"
WRONG = "not-the-password-8c1f"


def _entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("ursula", "ursula@fulcrum-demo.test", PASSWORD)


@pytest.fixture
def perm(db) -> Permission:
    return Permission.objects.select_related("content_type").get(
        content_type__app_label="rules", codename="change_rule"
    )


def test_login_records_the_user_and_address(client, user):
    assert client.login(username="ursula", password=PASSWORD)
    [entry] = _entries("auth.login")
    assert entry.actor == "user:ursula" and entry.actor_user_id == user.pk
    assert (entry.object_type, entry.object_id) == ("user", str(user.pk))
    assert entry.data == {"username": "ursula"}  # Client.login's request has no address
    assert not _entries("auth.user.flags_changed")  # the last_login save is not a flag change


def test_login_through_the_login_page(client, user):
    response = client.post("/accounts/login/", {"username": "ursula", "password": PASSWORD})
    assert response.status_code == 302
    [entry] = _entries("auth.login")
    assert entry.actor == "user:ursula" and entry.data == {"username": "ursula", "ip": "127.0.0.1"}


def test_failed_login_records_the_username_and_never_the_password(client, user):
    response = client.post("/accounts/login/", {"username": "ursula", "password": WRONG})
    assert response.status_code == 200
    assert not client.login(username="nobody-here", password=WRONG)
    known, unknown = _entries("auth.login_failed")
    assert known.actor == "anonymous" and known.actor_user_id is None
    assert known.data == {"username": "ursula", "ip": "127.0.0.1"}
    assert known.object_id == str(user.pk)
    assert unknown.data["username"] == "nobody-here" and unknown.object_id == ""
    everything = canonical_json(list(AuditEntry.objects.values_list("data", flat=True)))
    assert WRONG not in everything and "password" not in everything.lower()
    assert not _entries("auth.login")


def test_logout_is_recorded(client, user):
    client.login(username="ursula", password=PASSWORD)
    client.post("/accounts/logout/")
    [entry] = _entries("auth.logout")
    assert entry.actor == "user:ursula" and entry.data["username"] == "ursula"


def test_logout_without_a_session_records_nothing(client):
    client.post("/accounts/logout/")
    assert not _entries("auth.logout")


def test_group_membership_changes_from_either_side(user, administrator):
    executives, operations = Group.objects.get(name=EXECUTIVES), Group.objects.get(name=OPERATIONS)
    user.groups.add(executives, operations)
    user.groups.add(executives)  # already a member: nothing changes, nothing recorded
    with audit_actor(administrator):
        user.groups.remove(operations, Group.objects.create(name="never-a-member"))
    operations.user_set.add(user)
    user.groups.clear()
    entries = [e for e in _entries("auth.user.groups_changed") if e.object_id == str(user.pk)]
    assert [(e.actor, e.data) for e in entries] == [
        (UNKNOWN_ACTOR, {"user": "ursula", "added": sorted([EXECUTIVES, OPERATIONS])}),
        ("user:avery", {"user": "ursula", "removed": [OPERATIONS]}),
        (UNKNOWN_ACTOR, {"user": "ursula", "added": [OPERATIONS]}),
        (UNKNOWN_ACTOR, {"user": "ursula", "removed": sorted([EXECUTIVES, OPERATIONS])}),
    ]
    assert {e.object_type for e in entries} == {"user"}
    assert audit_verify().ok


def test_clearing_a_group_records_one_entry_per_member(user, outsider):
    group = Group.objects.create(name="auditors")
    group.user_set.add(user, outsider)
    group.user_set.clear()
    entries = _entries("auth.user.groups_changed")
    added = {e.data["user"]: e.data for e in entries if "added" in e.data}
    removed = {e.data["user"]: e.data for e in entries if "removed" in e.data}
    assert added == {
        "ursula": {"user": "ursula", "added": ["auditors"]},
        "oscar": {"user": "oscar", "added": ["auditors"]},
    }
    assert set(removed) == {"ursula", "oscar"}


def test_user_and_group_permission_changes(user, perm):
    with audit_actor("system:seed_demo"):
        user.user_permissions.add(perm)
    group = Group.objects.create(name="rule-editors")
    group.permissions.add(perm)
    perm.group_set.remove(group)
    [user_entry] = _entries("auth.user.permissions_changed")
    assert user_entry.actor == "system:seed_demo"
    assert user_entry.data == {"user": "ursula", "added": ["rules.change_rule"]}
    added, removed = _entries("auth.group.permissions_changed")
    assert (added.object_type, added.object_id) == ("group", str(group.pk))
    assert added.data == {"group": "rule-editors", "added": ["rules.change_rule"]}
    assert removed.data == {"group": "rule-editors", "removed": ["rules.change_rule"]}


def test_flag_changes_record_old_and_new_values(user, administrator):
    user.is_staff = True
    user.save()
    with audit_actor(administrator):
        user.is_superuser, user.is_active = True, False
        user.save()
    user.first_name = "Ursula"
    user.save()  # no flag changed
    user.save(update_fields=["first_name"])
    staff, promoted = [e for e in _entries("auth.user.flags_changed") if e.object_id == str(user.pk)]
    assert staff.actor == UNKNOWN_ACTOR
    assert staff.data == {"user": "ursula", "created": False, "changes": {"is_staff": [False, True]}}
    assert promoted.actor == "user:avery"
    assert promoted.data["changes"] == {"is_superuser": [False, True], "is_active": [True, False]}


def test_creating_a_superuser_is_recorded_but_not_an_ordinary_user(db):
    User = get_user_model()
    User.objects.create_user("plain", password=PASSWORD)
    root = User.objects.create_superuser("root", "root@fulcrum-demo.test", PASSWORD)
    [entry] = _entries("auth.user.flags_changed")
    assert entry.object_id == str(root.pk)
    assert entry.data == {
        "user": "root",
        "created": True,
        "changes": {"is_superuser": [None, True], "is_staff": [None, True]},
    }


def test_a_rolled_back_change_leaves_no_entry(user):
    group = Group.objects.get(name=EXECUTIVES)
    with pytest.raises(RuntimeError), transaction.atomic():
        user.groups.add(group)
        raise RuntimeError("the change fails after the grant")
    assert not _entries("auth.user.groups_changed")
    assert not user.groups.exists()


def test_changes_made_by_post_migrate_handlers_are_not_recorded(user, perm):
    group = Group.objects.create(name="bootstrapped")

    def grant(**kwargs):
        group.permissions.add(perm)

    post_migrate.connect(grant, dispatch_uid="test-audit-grant")
    try:
        emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    finally:
        post_migrate.disconnect(dispatch_uid="test-audit-grant")
    assert group.permissions.filter(pk=perm.pk).exists()
    assert not _entries("auth.group.permissions_changed")


def test_group_change_through_the_admin_is_attributed_to_the_signed_in_user(client, administrator, outsider):
    from django.contrib.auth.models import Group

    from apps.audit.models import AuditEntry

    client.force_login(administrator)
    group = Group.objects.get(name="Executives")
    response = client.post(
        f"/admin/auth/user/{outsider.pk}/change/",
        {
            "username": outsider.username,
            "email": outsider.email,
            "is_active": "on",
            "groups": [group.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:1500]
    entry = (
        AuditEntry.objects.filter(object_id=str(outsider.pk)).exclude(action__startswith="auth.log").last()
    )
    assert entry is not None and entry.actor == f"user:{administrator.username}"
