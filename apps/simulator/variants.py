"""Cross-system name variants: how accounting spells a client the CRM knows by its full name.

"SUMMIT BUILDERS, INC." for "Summit Builders" is a sure fuzzy match (linked without a person); "Summit Bldrs"
or "Summit Builders Billing" are close enough for entity resolution's review queue but not for linking alone.
Each variant is checked with :func:`name_similarity`, the score resolution uses, so that it lands where it
is meant to at resolution's default thresholds. Standard library only, like the rest of the simulator.
"""

from __future__ import annotations

import re

from .names import ABBREVIATIONS, BILLING_SUFFIXES

# Entity resolution's defaults (ResolutionSettings): auto-link at 92 with a 5-point margin over the runner-up,
# review from 75. Review variants aim inside (78, 89) so that they stay in the queue at those thresholds.
REVIEW_BAND = (0.78, 0.89)
AUTO_LINK, AUTO_MARGIN = 0.92, 0.05
_LEGAL_WORDS = frozenset({
    "the", "inc", "incorporated", "llc", "ltd", "limited", "co", "company", "corp", "corporation",
    "plc", "lp", "llp", "pllc", "gmbh", "pc", "group",
})  # fmt: skip
_NON_WORD = re.compile(r"[^\w\s]+")


def normalised(name: str) -> str:
    """The same steps as ``apps.entities.resolution.normalise_name`` (the simulator imports no Django)."""
    text = _NON_WORD.sub(" ", name.lower().replace("&", " and "))
    return " ".join(w for w in text.split() if w not in _LEGAL_WORDS)


def name_similarity(a: str, b: str) -> float:
    """0..1 as resolution scores two names: the Indel ratio of the normalised names with their words sorted
    (rapidfuzz's ``token_sort_ratio`` divided by 100), computed with a longest-common-subsequence table."""
    x, y = (" ".join(sorted(normalised(n).split())) for n in (a, b))
    if not x and not y:
        return 1.0
    previous = [0] * (len(y) + 1)
    for char in x:
        current = [0]
        for j, other in enumerate(y):
            current.append(previous[j] + 1 if char == other else max(previous[j + 1], current[j]))
        previous = current
    return 2 * previous[-1] / (len(x) + len(y))


def variant(name: str, sure: bool, others: list[str]) -> tuple[str, str]:
    """(variant, style) of ``name``, or ("", "") when none fits: ``upper`` (a sure match) when ``sure`` and
    no other client comes within the auto-link margin of it, else the ``abbreviated`` or ``suffixed``
    spelling nearest the middle of the review band."""
    words = set(normalised(name).split())
    if sure:
        upper = name.upper() + ", INC."
        rivals = [o for o in others if o != name and words & set(normalised(o).split())]
        if all(name_similarity(upper, o) <= AUTO_LINK - AUTO_MARGIN for o in rivals):
            return upper, "upper"
    candidates = [(" ".join(ABBREVIATIONS.get(w, w) for w in name.split()), "abbreviated")]
    candidates += [(f"{name} {suffix}", "suffixed") for suffix in BILLING_SUFFIXES]
    low, high = REVIEW_BAND
    middle = (low + high) / 2
    inside = []
    for candidate, style in candidates:
        score = name_similarity(name, candidate)
        if candidate != name and low <= score <= high:
            inside.append((abs(score - middle), candidate, style))
    if not inside:
        return "", ""
    _, best, style = min(inside)
    return best, style
