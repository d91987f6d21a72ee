"""One error vocabulary and one backoff for every layer that calls out and tries again.

A failure is ``Transient`` (trying later may work: a timeout, a 5xx, a 429, a spent rate budget, an SMTP 4xx)
or ``Permanent`` (trying again gets the same answer: a 4xx, a refused recipient, an unsafe destination, a
misconfigured connection). The vendor client raises them (``apps.connectors.http``), webhook processing
retries the one and records the other (``apps.connectors.webhooks``), the outbox marks a row failed or dead
by them (``apps.escalations.delivery``). A failure neither class names is each caller's to judge (webhook
processing retries it a bounded number of times, the outbox lets it reach the task).

Waits between tries are exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And
Jitter"): uniform between 0 and ``min(cap, base × 2^retry)``, so clients that failed together do not retry
together. An upstream's own advice (``Retry-After``, a rate-limit reset) wins when it is longer: the far side
knows its budget. Each layer keeps its own settings: ``FULCRUM["<LAYER>_BACKOFF_BASE"]`` and ``_CAP`` for
``HTTP`` (the vendor client, within one call), ``WEBHOOK`` (webhook processing tasks) and ``ACTION`` (the
outbox).

This module imports nothing from the project, so every layer may import it (pyproject's import contracts).
"""

from __future__ import annotations

import math
import random

from django.conf import settings

__all__ = ["Permanent", "Transient", "backoff", "configured_backoff", "decorrelated_backoff"]


class Transient(Exception):
    """Trying again later may work.

    ``retry_after``: seconds the far side asked us to wait (``Retry-After``, a rate-limit reset), if it did.
    ``outcome_unknown``: a write may have taken effect although no answer says so; look before writing again.
    """

    # Class defaults as well: a subclass that also derives from a C exception (``requests.HTTPError`` is an
    # ``OSError``) does not run this ``__init__``.
    retry_after: float | None = None
    outcome_unknown: bool = False

    def __init__(self, message: str = "", *, retry_after: float | None = None, outcome_unknown: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


class Permanent(Exception):
    """Trying again cannot help: the far side answered, and it will answer the same."""


def backoff(
    retry: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    longest: float = math.inf,
) -> float:
    """Seconds before retry ``retry`` (0 for the first): full jitter over ``min(cap, base × 2^retry)``.

    ``retry_after`` wins when longer, itself cut to ``longest`` (beyond it the caller asks again then)."""
    ceiling = min(cap, base * 2 ** max(0, retry))
    wait = random.uniform(0.0, ceiling)
    if retry_after is not None:
        wait = max(wait, min(retry_after, longest))
    return wait


def decorrelated_backoff(
    previous: float | None,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    longest: float = math.inf,
) -> float:
    """Seconds before the next try, by decorrelated jitter (the same AWS post): uniform between ``base``
    and three times the ``previous`` wait (``base`` for the first), never past ``cap``. Never sooner than
    ``base`` (no immediate retry), growing about 1.5-fold a try on average, jittered so that clients that
    failed together spread out. ``retry_after`` wins when longer, cut to ``longest``, as in ``backoff``."""
    upper = min(cap, 3 * max(base, previous or 0.0))
    wait = random.uniform(min(base, upper), upper)
    if retry_after is not None:
        wait = max(wait, min(retry_after, longest))
    return wait


def configured_backoff(
    layer: str, retry: int, *, retry_after: float | None = None, longest: float = math.inf
) -> float:
    """``backoff`` with ``FULCRUM["<layer>_BACKOFF_BASE"]`` and ``["<layer>_BACKOFF_CAP"]``."""
    conf = settings.FULCRUM
    return backoff(
        retry,
        base=float(conf[f"{layer}_BACKOFF_BASE"]),
        cap=float(conf[f"{layer}_BACKOFF_CAP"]),
        retry_after=retry_after,
        longest=longest,
    )
