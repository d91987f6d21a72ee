"""Personas every test can ask for by name (STYLE: an operations manager, an executive, two account
managers, an outsider), and helpers for fresh data."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from apps.accounts.roles import ACCOUNT_MANAGERS, ADMINISTRATORS, EXECUTIVES, OPERATIONS


def _person(username: str, role: str | None, **extra: object):
    from tests.factories import UserFactory

    user = UserFactory(username=username, email=f"{username}@fulcrum-demo.test", **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def ops_manager(db):
    return _person("olivia", OPERATIONS, is_staff=True)


@pytest.fixture
def executive(db):
    return _person("elena", EXECUTIVES, first_name="Elena", last_name="Park")


@pytest.fixture
def administrator(db):
    return _person("avery", ADMINISTRATORS, is_staff=True, is_superuser=True)


@pytest.fixture
def account_manager(db):
    return _person("maria", ACCOUNT_MANAGERS, first_name="Maria", last_name="Lopez")


@pytest.fixture
def other_account_manager(db):
    return _person("james", ACCOUNT_MANAGERS)


@pytest.fixture
def outsider(db):
    return _person("oscar", None)


@pytest.fixture
def scheduled_flushes(monkeypatch: pytest.MonkeyPatch):
    """The countdowns of the evaluation flushes that marking subjects queues, recorded instead of sent to the
    broker (the test flushes itself); the once-per-window guard is reset before and after."""
    from django.conf import settings

    from apps.connectors.ratelimit import redis_client
    from apps.orchestration import tasks
    from apps.rules.evaluation import triggers

    countdowns: list[float] = []
    monkeypatch.setattr(tasks.evaluate_pending, "apply_async", lambda countdown: countdowns.append(countdown))
    # The broker's Redis, taken now: a test may make the triggers' Redis one that is down.
    broker = redis_client(settings.CELERY_BROKER_URL)
    triggers.flush_guards_clear(broker)
    yield countdowns
    triggers.flush_guards_clear(broker)
