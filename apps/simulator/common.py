"""Shared pieces: HTTP request/response values, time and money formatting, paging helpers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

QBO_TZ = timezone(timedelta(hours=-8))
_EPOCH = date(1970, 1, 1)
MS_PER_DAY = 86_400_000


@dataclass
class Request:
    """One parsed HTTP request as the vendor handlers see it."""

    method: str
    path: str
    raw_query: str
    headers: Mapping[str, str]
    body: bytes
    base_url: str
    duplicate_page: bool = False
    query: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.query = parse_qs(self.raw_query, keep_blank_values=True)

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json;charset=UTF-8"


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, headers or [])


# ---- time -------------------------------------------------------------------------------------------


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@lru_cache(maxsize=8192)
def _day(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).isoformat()


def _clock(seconds: int) -> str:
    days, rem = divmod(seconds, 86_400)
    hours, rem = divmod(rem, 3_600)
    minutes, secs = divmod(rem, 60)
    return f"{_day(days)}T{hours:02d}:{minutes:02d}:{secs:02d}"


def hubspot_time(ms: int) -> str:
    """HubSpot: ISO 8601 UTC with milliseconds, ``2026-01-02T03:04:05.678Z``."""
    return f"{_clock(ms // 1000)}.{ms % 1000:03d}Z"


def procore_time(ms: int) -> str:
    """Procore: ISO 8601 UTC to the second, ``2026-01-02T03:04:05Z``."""
    return _clock(ms // 1000) + "Z"


def qbo_time(ms: int) -> str:
    """QuickBooks: local company time with offset (fixed Pacific Standard Time), ``...T03:04:05-08:00``."""
    return _clock(ms // 1000 - 8 * 3_600) + "-08:00"


def parse_instant(text: str, naive_tz: timezone = UTC) -> int:
    """Parse an ISO 8601 date or date-time (``Z`` or offset; naive = ``naive_tz``) into epoch ms."""
    text = re.sub(r"(\d) (\d\d:?\d\d)$", r"\1+\2", text.strip())  # an unencoded "+" arrives as a space
    if len(text) == 10:
        day = date.fromisoformat(text)
        return to_ms(datetime(day.year, day.month, day.day, tzinfo=naive_tz))
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=naive_tz)
    return to_ms(moment)


def iso_date(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


# ---- money --------------------------------------------------------------------------------------------


def money_str(cents: int) -> str:
    """Decimal string with two places, e.g. ``"12345.60"`` (Procore)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def money_num(cents: int) -> float:
    """JSON number (QuickBooks): ``cents / 100`` serialises as the shortest exact decimal, e.g. 12345.67."""
    return cents / 100


def now_ms() -> int:
    return int(time.time() * 1000)
