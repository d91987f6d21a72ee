"""Fuzzy resolution at 10k clients: a measurement, run on demand (FULCRUM_BENCH_RESOLUTION=1).

Prints the seconds of candidate generation (cdist in chunks) and of a whole resolution pass, and checks the
planted duplicates were found. Skipped by default: it takes tens of seconds on a shared 2-core machine.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from django.utils import timezone

from apps.entities.models import Client, MatchCandidate, SourceObject
from apps.entities.resolution import entities_resolve, normalise_name, score_pairs
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.skipif(
    not os.environ.get("FULCRUM_BENCH_RESOLUTION"), reason="measurement: set FULCRUM_BENCH_RESOLUTION=1"
)

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "bel",
    "dun",
    "sha",
    "qui",
    "mar",
    "nel",
    "os",
    "tic",
    "har",
    "gro",
    "fen",
    "wy",
    "zu",
    "pra",
]
TRADE = [
    "Construction",
    "Builders",
    "Electric",
    "Plumbing",
    "Roofing",
    "Concrete",
    "Dental",
    "Clinic",
    "Partners",
    "Holdings",
]
SUFFIX = ["Inc", "LLC", "Ltd", "Co", "Group", ""]


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def synthetic_names(n: int, rng: random.Random) -> list[str]:
    """Made-up company names: one or two invented words and a trade ("Ravendun Grotic Roofing")."""
    names: set[str] = set()
    while len(names) < n:
        words = [word(rng) for _ in range(rng.randint(1, 2))]
        names.add(" ".join([*words, rng.choice(TRADE)]))
    return sorted(names)


def test_candidate_generation_on_10k_clients(db: None, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(7)
    crm = ConnectionFactory(slug="crm", kind="hubspot")
    accounting = ConnectionFactory(slug="accounting", kind="quickbooks")
    now = timezone.now()
    names = synthetic_names(11_000, rng)
    clients, others = names[:10_000], names[10_000:]
    Client.objects.bulk_create(
        Client(
            source=crm, external_id=str(i), name=f"{name} {rng.choice(SUFFIX)}".strip(),
            source_updated_at=now, content_hash="", synced_at=now,
        )
        for i, name in enumerate(clients)
    )  # fmt: skip
    planted = rng.sample(clients, 500)  # the same company with another legal suffix: an auto-link
    customers = [f"{name}, {rng.choice(['Inc.', 'L.L.C.', 'Ltd'])}" for name in planted] + others
    SourceObject.objects.bulk_create(
        SourceObject(
            connection=accounting, object_type="customer", external_id=f"c{i}", name=name,
            source_updated_at=now, content_hash="", synced_at=now,
        )
        for i, name in enumerate(customers)
    )  # fmt: skip

    lefts = [normalise_name(n) for n in customers]
    rights = [normalise_name(n) for n in Client.objects.values_list("name", flat=True)]
    started = time.perf_counter()
    pairs = sum(1 for _ in score_pairs(lefts, rights, cutoff=75))
    cdist_s = time.perf_counter() - started

    started = time.perf_counter()
    result = entities_resolve(propagate=False)
    resolve_s = time.perf_counter() - started

    started = time.perf_counter()
    entities_resolve(propagate=False)  # steady state: nothing new upstream
    again_s = time.perf_counter() - started

    own = {f"c{i}": name for i, name in enumerate(planted)}  # planted customer -> its client's base name
    wrong_auto = missed = 0
    pending: dict[str, set[str]] = {}
    for so_ext, client_name in MatchCandidate.objects.filter(status="pending").values_list(
        "source_object__external_id", "client__name"
    ):
        pending.setdefault(so_ext, set()).add(client_name)
    for so_ext, method, client_name in SourceObject.objects.values_list(
        "external_id", "match_method", "client__name"
    ):
        if so_ext in own:
            base = own[so_ext]
            if method == "fuzzy":
                wrong_auto += not client_name.startswith(base)
            else:
                missed += not any(c.startswith(base) for c in pending.get(so_ext, ()))
    false_auto = SourceObject.objects.filter(match_method="fuzzy").exclude(external_id__in=own).count()
    with capsys.disabled():
        print(
            f"\n10,000 clients x {len(customers)} unlinked customers: score_pairs {cdist_s:.2f} s "
            f"({pairs} pairs >= 75); entities_resolve {resolve_s:.2f} s: auto-linked {result.auto_linked}, "
            f"queued {result.queued} candidates, new {result.new_entities}; planted 500: wrong auto-links "
            f"{wrong_auto}, missed {missed}; non-planted auto-linked {false_auto}; "
            f"a second pass {again_s:.2f} s"
        )
    # Every planted duplicate is linked to its own client or queued with it; none is linked wrongly.
    assert (wrong_auto, missed) == (0, 0)
    assert result.auto_linked >= 250
