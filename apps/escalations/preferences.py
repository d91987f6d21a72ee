"""Each person's noise settings, with the company defaults for whatever they left empty.

People are addressed by email in the outbox; a target with no user account (a policy's fixed address)
gets the company defaults. One query resolves every target of a batch.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Exists, OuterRef
from django.db.models.functions import Lower

from apps.accounts.models import NotificationSettings, parse_quiet_hours
from apps.accounts.roles import EXECUTIVES


@dataclass(frozen=True, slots=True)
class Preferences:
    """How one person is emailed: their time zone, quiet hours (start, end hour) or None, digest period
    or None (one email per escalation), and hourly cap (0: none)."""

    tz: zoneinfo.ZoneInfo
    quiet: tuple[int, int] | None
    digest: dt.timedelta | None
    cap: int
    quiet_spec: str = ""

    @property
    def rollup_period(self) -> dt.timedelta:
        """The period of the digest that collects what the cap held back (the digest's, or the default)."""
        return self.digest or settings.FULCRUM["DIGEST_PERIOD"]


def company_quiet_hours() -> tuple[int, int] | None:
    spec = settings.FULCRUM.get("QUIET_HOURS") or ""
    try:
        return parse_quiet_hours(spec)
    except ValueError as exc:
        raise ImproperlyConfigured(f"FULCRUM_QUIET_HOURS {exc}") from exc


def defaults(*, executive: bool) -> Preferences:
    """The company defaults (environment variables): what a person without settings gets."""
    digest = (
        settings.FULCRUM["DIGEST_PERIOD"] if executive and settings.FULCRUM.get("EXECUTIVE_DIGEST") else None
    )
    return Preferences(
        tz=zoneinfo.ZoneInfo(settings.TIME_ZONE),
        quiet=company_quiet_hours(),
        digest=digest,
        cap=int(settings.FULCRUM.get("RECIPIENT_HOURLY_CAP") or 0),
        quiet_spec=str(settings.FULCRUM.get("QUIET_HOURS") or ""),
    )


def resolve(row: NotificationSettings | None, *, executive: bool) -> Preferences:
    """One person's settings over the defaults (an empty field keeps the default)."""
    base = defaults(executive=executive)
    if row is None:
        return base
    quiet, spec = base.quiet, base.quiet_spec
    if row.quiet_hours:
        quiet, spec = parse_quiet_hours(row.quiet_hours), row.quiet_hours
    digest = base.digest
    if row.digest_minutes is not None:
        digest = dt.timedelta(minutes=row.digest_minutes) if row.digest_minutes else None
    return Preferences(
        tz=zoneinfo.ZoneInfo(row.time_zone) if row.time_zone else base.tz,
        quiet=quiet,
        digest=digest,
        cap=base.cap if row.hourly_cap is None else row.hourly_cap,
        quiet_spec=spec,
    )


def preferences_for(targets: Iterable[str]) -> dict[str, Preferences]:
    """Each target address's preferences (lower-cased addresses match; one query)."""
    wanted = {t for t in targets if "@" in t}
    found: dict[str, Preferences] = {}
    if wanted:
        users = (
            get_user_model()
            .objects.annotate(address=Lower("email"))
            .filter(address__in={t.lower() for t in wanted}, is_active=True)
            .select_related("notification_settings")
            .annotate(is_executive=Exists(_executive_groups()))
            .order_by("pk")
        )
        by_email = {t.lower(): t for t in wanted}
        for user in users:
            target = by_email.get(user.email.lower())
            if target is None or target in found:
                continue
            row = getattr(user, "notification_settings", None)
            found[target] = resolve(row, executive=bool(user.is_executive))
    for target in wanted | {t for t in targets if "@" not in t}:
        found.setdefault(target, defaults(executive=False))
    return found


def _executive_groups() -> Any:
    membership = get_user_model().groups.through
    return membership.objects.filter(user_id=OuterRef("pk"), group__name=EXECUTIVES)
