"""Fault injection: an ordered, thread-safe, JSON-serialisable list of rules that tests change live.

A rule matches a request by ``path_prefix`` (on the path) and/or ``regex`` (searched in path + query) and an
optional ``method``.  It lets ``skip`` matching requests through, then fires ``count`` times (None = forever).
A ``rate_limit`` rule with a ``window`` is a vendor's rate-limit window instead: from the first request it
fires on, it answers every matching request with 429 and the same reset (``window`` seconds after that
request) until the reset passes, then lets requests through (still bounded by ``count``): how Procore's limits
behave (developers.procore.com/documentation/rate-limiting: "when that limit resets", X-Rate-Limit-Reset).
The first rule that matches and still has budget fires; one fault per request.  ``/_sim/`` is never faulted.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

KINDS = ("status", "rate_limit", "delay", "malformed", "duplicate_page", "drop_connection")


@dataclass
class FaultRule:
    kind: str
    path_prefix: str | None = None
    regex: str | None = None
    method: str | None = None
    count: int | None = 1  # times it fires; None = forever
    skip: int = 0  # matching requests let through first
    status: int = 500  # kind "status"
    body: Any = None  # kind "status" / "rate_limit": JSON body (default: the vendor's error shape)
    retry_after: int = 1  # kind "rate_limit": Retry-After seconds
    window: float | None = None  # kind "rate_limit": seconds of 429s with one reset (set on first firing)
    resets_at: float | None = None  # the window's reset (epoch seconds)
    seconds: float = 5.0  # kind "delay"
    fired: int = 0
    seen: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.regex is not None:
            re.compile(self.regex)
        if self.window is not None and self.kind != "rate_limit":
            raise ValueError("window applies to rate_limit faults only")

    def reset_at(self, now: float) -> int:
        """A rate-limit fault's reset, in whole epoch seconds: its window's, or ``retry_after`` from now."""
        return int(now) + self.retry_after if self.resets_at is None else math.ceil(self.resets_at)

    def _spent(self, now: float) -> bool:
        if self.count is not None and self.fired >= self.count:
            return True
        return self.resets_at is not None and now >= self.resets_at

    def matches(self, method: str, path: str, path_with_query: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        return self.regex is None or re.search(self.regex, path_with_query) is not None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault rule fields: {', '.join(sorted(unknown))}")
        return cls(**data)


class FaultPlan:
    def __init__(self, rules: Iterable[FaultRule | dict[str, Any]] = ()) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = [self._coerce(r) for r in rules]

    @staticmethod
    def _coerce(rule: FaultRule | dict[str, Any]) -> FaultRule:
        return rule if isinstance(rule, FaultRule) else FaultRule.from_json(rule)

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def add(self, kind: str, **options: Any) -> FaultRule:
        rule = FaultRule(kind=kind, **options)
        with self._lock:
            self._rules.append(rule)
        return rule

    def replace(self, rules: Iterable[FaultRule | dict[str, Any]]) -> None:
        new = [self._coerce(r) for r in rules]
        with self._lock:
            self._rules = new

    def clear(self) -> None:
        self.replace([])

    def match(self, method: str, path: str, path_with_query: str) -> FaultRule | None:
        """The rule that fires for this request (its counters are consumed atomically), or None."""
        now = time.time()
        with self._lock:
            for rule in self._rules:
                if rule._spent(now):
                    continue
                if not rule.matches(method, path, path_with_query):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                rule.fired += 1
                if rule.window is not None and rule.resets_at is None:
                    rule.resets_at = now + rule.window
                return rule
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(rule) for rule in self.rules]

    @classmethod
    def from_json(cls, data: Any) -> FaultPlan:
        if isinstance(data, dict):
            data = data.get("rules", [])
        if not isinstance(data, list):
            raise ValueError('expected a list of fault rules (or {"rules": [...]})')
        return cls(data)

    def __len__(self) -> int:
        return len(self.rules)
