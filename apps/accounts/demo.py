"""The demo company: one login per role (SPEC) with the simulator's account-manager emails, and the
simulator's connections and rules from ``config/demo/`` (also used by the end-to-end test and benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from .roles import ACCOUNT_MANAGERS, ADMINISTRATORS, EXECUTIVES, OPERATIONS

DEMO_DIR = Path(__file__).resolve().parents[2] / "config" / "demo"
DEMO_RULES = DEMO_DIR / "rules.yaml"

DEMO_PASSWORD = "fulcrum-demo"  # noqa: S105 - printed by `make demo`; seed_demo refuses to run with DEBUG off

DEMO_USERS = [
    # username, role, email, first, last
    ("admin", ADMINISTRATORS, "admin@fulcrum-demo.test", "Avery", "Admin"),
    ("ops", OPERATIONS, "olivia.ops@fulcrum-demo.test", "Olivia", "Ortiz"),
    ("exec", EXECUTIVES, "elena.exec@fulcrum-demo.test", "Elena", "Park"),
    ("maria", ACCOUNT_MANAGERS, "maria.chen@fulcrum-demo.test", "Maria", "Chen"),
    ("james", ACCOUNT_MANAGERS, "james.okafor@fulcrum-demo.test", "James", "Okafor"),
]


@transaction.atomic
def seed_demo_users() -> list[str]:
    User = get_user_model()
    made = []
    for username, role, email, first, last in DEMO_USERS:
        user, _ = User.objects.get_or_create(username=username)
        user.email, user.first_name, user.last_name = email, first, last
        user.is_staff = role in (ADMINISTRATORS, OPERATIONS)
        user.is_superuser = role == ADMINISTRATORS
        user.set_password(DEMO_PASSWORD)
        user.save()
        user.groups.set([Group.objects.get(name=role)])
        made.append(f"{username} / {DEMO_PASSWORD}  ({role})")
    return made


def demo_connections(base_url: str) -> list[dict[str, Any]]:
    """The three simulated systems as a connections file, pointed at a running simulator."""
    connections: list[dict[str, Any]] = yaml.safe_load((DEMO_DIR / "connections.yaml").read_text())
    return [{**item, "base_url": base_url} for item in connections]
