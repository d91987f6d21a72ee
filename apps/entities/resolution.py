"""Fuzzy entity resolution: what exact keys left unlinked, matched by name score, with a review queue.

After :func:`apps.entities.linking.link_entities`, an accounting customer still without a client is scored
against every live client by ``token_sort_ratio`` over normalised names (lower case, punctuation and legal
suffixes removed), in chunks through ``rapidfuzz.process.cdist`` (C, vectorised; no Python loop over pairs).
An accounting job still without a project is scored against the projects of the client its customer links to.
Then, with the thresholds of :class:`ResolutionSettings`:

* a best score at or above ``auto_link_threshold`` links (method ``fuzzy``) if it beats the runner-up by
  ``AUTO_LINK_MARGIN`` points;
* scores from ``review_threshold`` (or two near-equal ones above the auto threshold) wait as pending
  :class:`MatchCandidate` rows for a person to link, reject or merge;
* nothing above ``review_threshold``: a customer becomes a client of its own (method ``new``); a job stays
  unlinked, since projects are owned by the PM system.

A customer that became its own client keeps being scored against clients written since (and proposed, at
100, for a client arriving later with its domain), but only ever into the review queue: merging is for a
person to decide. Every pair is stored once whatever its fate, so a pair
rejected as "not a match" is never proposed again. Every link, new entity and merge is audited.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone
from rapidfuzz import fuzz, process

from apps.audit.services import Actor, audit_append_many, audit_record

from .changes import entities_changed_publish
from .linking import link_entities
from .models import Client, MatchCandidate, Project, ResolutionSettings, SourceObject

ACTOR = "system:resolution"
# Left names scored per cdist call: a 256 × 10k float32 matrix is 10 MB.
CHUNK = 256
# An auto-link must beat the runner-up by this much: two near-equal high scores are for a person to choose.
AUTO_LINK_MARGIN = 5.0
# Pending candidates kept per record: the best few are enough for a person to choose from.
MAX_CANDIDATES = 3
_RESOLUTION_LOCK = 0x52534C56  # "RSLV"

LEGAL_WORDS = frozenset({
    "the", "inc", "incorporated", "llc", "ltd", "limited", "co", "company", "corp", "corporation",
    "plc", "lp", "llp", "pllc", "gmbh", "pc", "group",
})  # fmt: skip
_NON_WORD = re.compile(r"[^\w\s]+")


def normalise_name(name: str) -> str:
    """Lower case, ``&`` as ``and``, punctuation removed, legal suffixes dropped: what the score compares."""
    text = _NON_WORD.sub(" ", name.lower().replace("&", " and "))
    words = [w for w in text.split() if w not in LEGAL_WORDS]
    return " ".join(words)


def score_pairs(
    lefts: Sequence[str], rights: Sequence[str], *, cutoff: float, chunk: int = CHUNK
) -> Iterator[tuple[int, int, float]]:
    """Every (left index, right index, score) with score ≥ cutoff, computed ``chunk`` lefts at a time."""
    if not lefts or not rights:
        return
    for start in range(0, len(lefts), chunk):
        matrix = process.cdist(
            lefts[start : start + chunk],
            rights,
            scorer=fuzz.token_sort_ratio,
            score_cutoff=cutoff,
            dtype=np.float32,
            workers=1,
        )
        rows, cols = np.nonzero(matrix >= cutoff)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            yield start + i, j, float(matrix[i, j])


@dataclass
class ResolutionResult:
    auto_linked: int = 0
    queued: int = 0
    new_entities: int = 0
    changes: dict[str, set[int]] = field(default_factory=dict)


def _route(
    hits: list[tuple[int, float]], settings: ResolutionSettings
) -> tuple[int | None, list[tuple[int, float]]]:
    """(right to auto-link or None, pairs for the review queue) for one left's hits, best first."""
    hits.sort(key=lambda h: -h[1])
    if hits and hits[0][1] >= settings.auto_link_threshold:
        runner_up = hits[1][1] if len(hits) > 1 else 0.0
        if hits[0][1] - runner_up >= AUTO_LINK_MARGIN:
            return hits[0][0], []
    return None, hits[:MAX_CANDIDATES]


def _known_pairs(left_ids: list[int], column: str) -> set[tuple[int, int]]:
    pairs = MatchCandidate.objects.filter(source_object_id__in=left_ids, **{f"{column}__isnull": False})
    return set(pairs.values_list("source_object_id", column))


_CUSTOMER_FIELDS: tuple[str, ...] = ("id", "name", "client_id", "match_method", "connection_id")
_CUSTOMER_FIELDS += ("external_id", "match_key", "synced_at")


def _changed(left: dict[str, Any], since: Any) -> bool:
    return left["match_method"] == "" or since is None or left["synced_at"] >= since


def _resolve_customers(settings: ResolutionSettings, result: ResolutionResult, now: Any) -> None:
    rows = (
        SourceObject.objects.filter(object_type=SourceObject.Type.CUSTOMER, deleted_at__isnull=True)
        .filter(Q(client__isnull=True, match_method="") | Q(match_method="new"))
        .exclude(candidates__status=MatchCandidate.Status.PENDING)
        .values(*_CUSTOMER_FIELDS)
        .order_by("id")
    )
    lefts: list[dict[str, Any]] = [{**row} for row in rows]
    if not lefts:
        return
    rights = list(
        Client.objects.filter(deleted_at__isnull=True, merged_into__isnull=True)
        .values_list("id", "name", "synced_at", "domain")
        .order_by("id")
    )
    since = settings.last_run_at
    # A customer that is already a client of its own was scored against every client by an earlier pass;
    # unless it changed since, only clients written since then can give it a new pair.
    fresh = [i for i, left in enumerate(lefts) if _changed(left, since)]
    stale = [i for i, left in enumerate(lefts) if not _changed(left, since)]
    changed_rights = [j for j, right in enumerate(rights) if since is None or right[2] >= since]
    known = _known_pairs([left["id"] for left in lefts], "client_id")
    names = [normalise_name(name) for _, name, _, _ in rights]
    hits: dict[int, list[tuple[int, float]]] = {}
    for left_idx, right_idx in ((fresh, range(len(rights))), (stale, changed_rights)):
        for i, j, score in score_pairs(
            [normalise_name(lefts[i]["name"]) for i in left_idx],
            [names[j] for j in right_idx],
            cutoff=settings.review_threshold,
        ):
            left, client_id = lefts[left_idx[i]], rights[right_idx[j]][0]
            if client_id != left["client_id"] and (left["id"], client_id) not in known:
                hits.setdefault(left_idx[i], []).append((client_id, score))
    # A customer that became a client of its own before the CRM client with its domain arrived: the exact
    # key the domain pass no longer looks at (it leaves such records alone) is proposed as a sure pair.
    by_domain: dict[str, list[int]] = {}
    for client_id, _, _, domain in rights:
        if domain:
            by_domain.setdefault(domain, []).append(client_id)
    for i, left in enumerate(lefts):
        same = by_domain.get(left["match_key"], []) if left["match_method"] == "new" else []
        if len(same) == 1 and same[0] != left["client_id"] and (left["id"], same[0]) not in known:
            others = [h for h in hits.get(i, []) if h[0] != same[0]]
            hits[i] = [(same[0], 100.0), *others]

    links: list[SourceObject] = []
    candidates: list[MatchCandidate] = []
    unmatched: list[dict[str, Any]] = []
    for i, left in enumerate(lefts):
        auto, review = _route(hits.get(i, []), settings)
        if left["match_method"] == "new":  # already an entity: a duplicate only a person may merge
            review = sorted(hits.get(i, []), key=lambda h: -h[1])[:MAX_CANDIDATES]
            auto = None
        if auto is not None:
            score = dict(hits[i])[auto]
            links.append(SourceObject(id=left["id"], client_id=auto, match_method="fuzzy"))
            candidates.append(
                MatchCandidate(
                    source_object_id=left["id"],
                    client_id=auto,
                    score=score,
                    status=MatchCandidate.Status.LINKED,
                    decided_at=now,
                )
            )
        elif review:
            candidates += [
                MatchCandidate(source_object_id=left["id"], client_id=c, score=s) for c, s in review
            ]
        elif left["match_method"] == "":
            unmatched.append(left)

    if unmatched:
        # The customer becomes a client of its own, keyed like a synced one (its connection and id).
        created = Client.objects.bulk_create(
            [
                Client(
                    source_id=left["connection_id"],
                    external_id=left["external_id"],
                    name=left["name"],
                    # No domain: the customer's stays on the crosswalk, so exact domain keys never see
                    # two clients (this one and a CRM client arriving later) and unlink both.
                    domain="",
                    source_updated_at=now,
                    content_hash="",
                    synced_at=now,
                )
                for left in unmatched
            ],
            update_conflicts=True,
            unique_fields=["source", "external_id"],
            update_fields=["name"],
        )
        for left, client in zip(unmatched, created, strict=True):
            links.append(SourceObject(id=left["id"], client_id=client.pk, match_method="new"))
        result.new_entities = len(created)
        result.changes.setdefault("client", set()).update(c.pk for c in created)

    SourceObject.objects.bulk_update(links, ["client_id", "match_method"], batch_size=1000)
    MatchCandidate.objects.bulk_create(candidates, batch_size=1000)
    result.auto_linked += sum(1 for link in links if link.match_method == "fuzzy")
    result.queued += sum(1 for c in candidates if c.status == MatchCandidate.Status.PENDING)
    audit_append_many(
        [
            {
                "action": "entities.fuzzy_linked" if link.match_method == "fuzzy" else "entities.new_client",
                "object_type": "entities.sourceobject",
                "object_id": link.pk,
                "data": {"client": link.client_id, "method": link.match_method},
            }
            for link in links
        ],
        actor=ACTOR,
    )


def _follow_customers(result: ResolutionResult, now: Any) -> None:
    """A client made from a customer lives and dies with it: tombstoned when the customer is gone upstream,
    live again when it comes back (a merged one stays merged)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE entities_client c
            SET deleted_at = CASE WHEN so.deleted_at IS NULL THEN NULL ELSE %s::timestamptz END,
                synced_at = %s
            FROM entities_sourceobject so
            WHERE so.match_method = 'new' AND so.client_id = c.id AND c.merged_into_id IS NULL
              AND c.source_id = so.connection_id AND c.external_id = so.external_id
              AND (c.deleted_at IS NULL) <> (so.deleted_at IS NULL)
            RETURNING c.id
            """,
            [now, now],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        result.changes.setdefault("client", set()).update(ids)


def _resolve_jobs(settings: ResolutionSettings, result: ResolutionResult, now: Any) -> None:
    # A job is scored only against the projects of its customer's client: a small block per client.
    parent = SourceObject.objects.filter(
        connection_id=models.OuterRef("connection_id"),
        external_id=models.OuterRef("parent_ref"),
        object_type=SourceObject.Type.CUSTOMER,
        client__isnull=False,
    ).values("client_id")[:1]
    lefts = list(
        SourceObject.objects.filter(
            object_type=SourceObject.Type.JOB, deleted_at__isnull=True, project__isnull=True, match_method=""
        )
        .exclude(candidates__status=MatchCandidate.Status.PENDING)
        .annotate(parent_client=models.Subquery(parent))
        .filter(parent_client__isnull=False)
        .values("id", "name", "match_key", "parent_client")
    )
    if not lefts:
        return
    by_client: dict[int, list[tuple[int, str]]] = {}
    projects = (
        Project.objects.filter(
            client_id__in={left["parent_client"] for left in lefts},
            deleted_at__isnull=True,
            merged_into__isnull=True,
        )
        .exclude(
            models.Exists(
                SourceObject.objects.filter(
                    project=models.OuterRef("pk"), object_type=SourceObject.Type.JOB, deleted_at__isnull=True
                )
            )
        )
        .values_list("client_id", "id", "name", "number")
    )
    for client_id, project_id, name, number in projects:
        # Job names often carry the project number ("P-10001 Riverside Clinic"): score both spellings.
        block = by_client.setdefault(client_id, [])
        block.append((project_id, normalise_name(name)))
        if number:
            block.append((project_id, normalise_name(f"{number} {name}")))
    known = _known_pairs([left["id"] for left in lefts], "project_id")
    links: list[SourceObject] = []
    candidates: list[MatchCandidate] = []
    for left in lefts:
        choices = by_client.get(left["parent_client"], [])
        name = left["name"]
        if left["match_key"] and name.startswith(left["match_key"]):
            name = name[len(left["match_key"]) :]
        found = process.extract(
            normalise_name(name),
            [n for _, n in choices],
            scorer=fuzz.token_sort_ratio,
            score_cutoff=settings.review_threshold,
            limit=None,
        )
        best: dict[int, float] = {}
        for _, score, j in found:
            project_id = choices[j][0]
            if (left["id"], project_id) not in known:
                best[project_id] = max(best.get(project_id, 0.0), float(score))
        hits = list(best.items())
        auto, review = _route(hits, settings)
        if auto is not None:
            links.append(SourceObject(id=left["id"], project_id=auto, match_method="fuzzy"))
            candidates.append(
                MatchCandidate(
                    source_object_id=left["id"],
                    project_id=auto,
                    score=dict(hits)[auto],
                    status=MatchCandidate.Status.LINKED,
                    decided_at=now,
                )
            )
        else:
            candidates += [
                MatchCandidate(source_object_id=left["id"], project_id=p, score=s) for p, s in review
            ]
    SourceObject.objects.bulk_update(links, ["project_id", "match_method"], batch_size=1000)
    MatchCandidate.objects.bulk_create(candidates, batch_size=1000)
    result.auto_linked += len(links)
    result.queued += sum(1 for c in candidates if c.status == MatchCandidate.Status.PENDING)
    audit_append_many(
        [
            {
                "action": "entities.fuzzy_linked",
                "object_type": "entities.sourceobject",
                "object_id": link.pk,
                "data": {"project": link.project_id, "method": "fuzzy"},
            }
            for link in links
        ],
        actor=ACTOR,
    )


def _propagate(changes: dict[str, set[int]]) -> None:
    """Derive what follows from new crosswalk links (a project's client, money's project), then tell the
    rules, after commit, which subjects to re-evaluate."""
    entities_changed_publish(changes, trigger="resolution")


@transaction.atomic
def entities_resolve(*, propagate: bool = True) -> ResolutionResult:
    """Fuzzy-match customers, then jobs (a customer linked now lets its jobs be scored in the same pass)."""
    with connection.cursor() as cursor:  # one pass at a time: two would propose the same pairs
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_RESOLUTION_LOCK])
    settings = ResolutionSettings.current()
    now = timezone.now()
    result = ResolutionResult()
    _follow_customers(result, now)
    _resolve_customers(settings, result, now)
    link_entities(result.changes)
    _resolve_jobs(settings, result, now)
    from .documents import documents_resolve  # names of documents, after clients and projects settle

    documents = documents_resolve(settings=settings)
    if documents.changed:
        result.changes.setdefault("document", set()).update(documents.changed)
    ResolutionSettings.objects.filter(pk=settings.pk).update(last_run_at=now)
    if propagate:
        _propagate(result.changes)
    return result


def _decide(candidate: MatchCandidate, status: str, actor: Actor) -> None:
    candidate.status = status
    candidate.decided_at = timezone.now()
    candidate.decided_by = actor if isinstance(actor, models.Model) else None  # type: ignore[assignment]
    candidate.save(update_fields=["status", "decided_at", "decided_by"])


def _locked(candidate: MatchCandidate) -> MatchCandidate:
    locked = MatchCandidate.objects.select_for_update().select_related("source_object").get(pk=candidate.pk)
    if locked.status != MatchCandidate.Status.PENDING:
        raise ValueError(f"candidate {candidate.pk} was already {locked.status}")
    return locked


def _close_siblings(candidate: MatchCandidate, actor: Actor) -> list[int]:
    """Once a record is matched, its other proposals are answered "not this one" (and not proposed again).
    Returns their ids (an undo reopens them)."""
    siblings = MatchCandidate.objects.filter(
        source_object_id=candidate.source_object_id, status=MatchCandidate.Status.PENDING
    ).exclude(pk=candidate.pk)
    ids = list(siblings.values_list("pk", flat=True))
    MatchCandidate.objects.filter(pk__in=ids).update(
        status=MatchCandidate.Status.REJECTED,
        decided_at=timezone.now(),
        decided_by=actor if isinstance(actor, models.Model) else None,
    )
    return ids


def _remember(candidate: MatchCandidate, undo: dict[str, Any]) -> None:
    MatchCandidate.objects.filter(pk=candidate.pk).update(undo=undo)
    candidate.undo = undo


@transaction.atomic
def candidate_link(*, candidate: MatchCandidate, actor: Actor) -> None:
    """A person says: this record is that client (or project). Links it and audits the decision."""
    candidate = _locked(candidate)
    so = candidate.source_object
    current = so.client_id if candidate.client_id else so.project_id
    if current is not None:
        raise ValueError("the record is already an entity of its own: merge it instead")
    previous_method = so.match_method
    if candidate.client_id:
        so.client_id = candidate.client_id
    else:
        so.project_id = candidate.project_id
    so.match_method = "review"
    so.save(update_fields=["client", "project", "match_method"])
    _decide(candidate, MatchCandidate.Status.LINKED, actor)
    siblings = _close_siblings(candidate, actor)
    _remember(candidate, {"kind": "link", "match_method": previous_method, "siblings": siblings})
    audit_record(
        action="entities.match_linked",
        actor=actor,
        object_type="entities.sourceobject",
        object_id=so.pk,
        data={"client": candidate.client_id, "project": candidate.project_id, "score": candidate.score},
    )
    changes: dict[str, set[int]] = {}
    if candidate.project_id:
        changes["project"] = {candidate.project_id}
    _propagate(changes)


@transaction.atomic
def candidate_reject(*, candidate: MatchCandidate, actor: Actor) -> None:
    """ "Not a match": remembered by the pair's row, so it is never proposed again."""
    candidate = _locked(candidate)
    _decide(candidate, MatchCandidate.Status.REJECTED, actor)
    audit_record(
        action="entities.match_rejected",
        actor=actor,
        object_type="entities.sourceobject",
        object_id=candidate.source_object_id,
        data={"client": candidate.client_id, "project": candidate.project_id, "score": candidate.score},
    )


@transaction.atomic
def candidate_merge(*, candidate: MatchCandidate, actor: Actor) -> dict[str, int]:
    """The entity this record already is (a client made from it) is a duplicate of the candidate: merge it
    into the candidate. A record that is no entity yet is simply linked."""
    candidate = _locked(candidate)
    so = candidate.source_object
    survivor: Client | Project = candidate.client or candidate.project  # type: ignore[assignment]
    duplicate_id = so.client_id if candidate.client_id else so.project_id
    if duplicate_id is None:
        candidate_link(candidate=candidate, actor=actor)
        return {}
    duplicate = type(survivor).objects.get(pk=duplicate_id)
    moved_ids: dict[str, list[int]] = {}
    moved = entity_merge(duplicate=duplicate, survivor=survivor, actor=actor, moved_ids=moved_ids)
    previous_method = so.match_method
    SourceObject.objects.filter(pk=so.pk).update(match_method="merged")
    _decide(candidate, MatchCandidate.Status.MERGED, actor)
    siblings = _close_siblings(candidate, actor)
    _remember(
        candidate,
        {
            "kind": "merge",
            "duplicate": duplicate.pk,
            "moved": moved_ids,
            "match_method": previous_method,
            "siblings": siblings,
        },
    )
    return moved


@transaction.atomic
def candidate_undo(*, candidate: MatchCandidate, actor: Actor) -> None:
    """Take back a link or a merge decided in the review queue: the record, and for a merge everything
    that moved onto the survivor, go back to where they were; the pair and the proposals the decision
    closed are pending again. Audited like the decision. Rows that changed since (moved by a later
    merge, relinked by a person) are left as they are."""
    locked = MatchCandidate.objects.select_for_update().select_related("source_object").get(pk=candidate.pk)
    undo = locked.undo or {}
    if locked.status not in (MatchCandidate.Status.LINKED, MatchCandidate.Status.MERGED) or not undo:
        raise ValueError(f"candidate {locked.pk} is {locked.status}: only a link or a merge can be undone")
    so = locked.source_object
    survivor: Client | Project = locked.client or locked.project  # type: ignore[assignment]
    model = type(survivor)
    key = model._meta.model_name or ""
    fk = "client_id" if locked.client_id else "project_id"
    changes: dict[str, set[int]] = {key: {survivor.pk}}
    restored: dict[str, int] = {}
    if undo.get("kind") == "merge":
        duplicate = model._default_manager.get(pk=undo["duplicate"])
        if duplicate.merged_into_id != survivor.pk:
            raise ValueError(f"{duplicate} is no longer merged into {survivor}: it cannot be taken back")
        restored = _unmerge(duplicate, survivor, undo.get("moved") or {})
        changes[key].add(duplicate.pk)
        SourceObject.objects.filter(pk=so.pk, match_method="merged").update(match_method=undo["match_method"])
    else:
        if getattr(so, fk) != survivor.pk:
            raise ValueError(f"the record is no longer linked to {survivor}: nothing to undo")
        SourceObject.objects.filter(pk=so.pk).update(**{fk: None, "match_method": undo["match_method"]})
    MatchCandidate.objects.filter(
        pk__in=undo.get("siblings") or [], status=MatchCandidate.Status.REJECTED
    ).update(status=MatchCandidate.Status.PENDING, decided_at=None, decided_by=None)
    MatchCandidate.objects.filter(pk=locked.pk).update(
        status=MatchCandidate.Status.PENDING, decided_at=None, decided_by=None, undo={}
    )
    audit_record(
        action=f"entities.{'merge' if undo.get('kind') == 'merge' else 'match_link'}_undone",
        actor=actor,
        object_type="entities.sourceobject",
        object_id=so.pk,
        data={
            "candidate": locked.pk,
            "client": locked.client_id,
            "project": locked.project_id,
            "decided_by": locked.decided_by_id,
            "decided_at": locked.decided_at.isoformat() if locked.decided_at else None,
            "restored": restored,
        },
    )
    _propagate(changes)


def _unmerge(
    duplicate: Client | Project, survivor: Client | Project, moved: dict[str, list[int]]
) -> dict[str, int]:
    """Move back what a merge moved (the rows still on the survivor) and bring the duplicate back."""
    model = type(survivor)
    dependents = {f"{related._meta.label_lower}.{fk}": (related, fk) for related, fk in _dependents(model)}
    restored: dict[str, int] = {}
    for label, ids in moved.items():
        if label == FOLLOWERS:
            count = model._default_manager.filter(pk__in=ids, merged_into=survivor).update(
                merged_into=duplicate
            )
        elif label in dependents:
            related, fk = dependents[label]
            count = related._default_manager.filter(pk__in=ids, **{fk: survivor.pk}).update(
                **{fk: duplicate.pk}
            )
        else:
            continue
        if count:
            restored[label] = count
    model._default_manager.filter(pk=duplicate.pk).update(merged_into=None, deleted_at=None)
    return restored


def _repoint(related: type[models.Model], fk: str, old: int, new: int) -> list[int]:
    """Point ``related.fk`` at ``new`` where it points at ``old``; the ids of the rows changed, from the
    same statement (a row written between a SELECT and the UPDATE would move unrecorded)."""
    quote = connection.ops.quote_name
    column = str(related._meta.get_field(fk).column)  # type: ignore[union-attr]
    table, pk = related._meta.db_table, str(related._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(table)} SET {quote(column)} = %s WHERE {quote(column)} = %s "  # noqa: S608
            f"RETURNING {quote(pk)}",
            [new, old],
        )
        return [row[0] for row in cursor.fetchall()]


# The key of ``moved_ids`` listing earlier duplicates of the duplicate that followed it to the survivor.
FOLLOWERS = "merged_into"


def _dependents(model: type[models.Model]) -> list[tuple[type[models.Model], str]]:
    """(model, FK column name) of every many-to-one relation into ``model``, in every app."""
    found: list[tuple[type[models.Model], str]] = []
    for rel in model._meta.related_objects:
        if rel.one_to_many and rel.related_model not in (model, MatchCandidate):
            found.append((rel.related_model, rel.field.name))
    return found


@transaction.atomic
def entity_merge(
    *,
    duplicate: Client | Project,
    survivor: Client | Project,
    actor: Actor,
    moved_ids: dict[str, list[int]] | None = None,
) -> dict[str, int]:
    """Move everything that points at ``duplicate`` onto ``survivor`` (crosswalk rows, projects, change
    orders, money, escalations, ...), tombstone the duplicate and remember where it went. One transaction.

    ``moved_ids`` receives the ids of the rows moved, per ``"app.model.fk"`` (and ``FOLLOWERS``), for an
    undo."""
    model = type(survivor)
    if type(duplicate) is not model or duplicate.pk == survivor.pk:
        raise ValueError("merge needs two different entities of the same kind")
    if survivor.merged_into_id is not None or survivor.deleted_at is not None:
        raise ValueError(f"{survivor} is itself merged or deleted")
    moved: dict[str, int] = {}
    for related, fk in _dependents(model):
        ids = _repoint(related, fk, duplicate.pk, survivor.pk)
        if ids:
            moved[f"{related._meta.label_lower}.{fk}"] = len(ids)
            if moved_ids is not None:
                moved_ids[f"{related._meta.label_lower}.{fk}"] = ids
    # Earlier duplicates of the duplicate follow it, so lookups through merged_into stay one hop deep.
    followers = model._default_manager.filter(merged_into=duplicate)
    if moved_ids is not None:
        moved_ids[FOLLOWERS] = list(followers.values_list("pk", flat=True))
    followers.update(merged_into=survivor)
    # Proposals about the duplicate are moot; decided ones stay as history.
    MatchCandidate.objects.filter(
        status=MatchCandidate.Status.PENDING, **{str(model._meta.model_name): duplicate}
    ).delete()
    now = timezone.now()
    model._default_manager.filter(pk=duplicate.pk).update(merged_into=survivor, deleted_at=now)
    audit_record(
        action=f"entities.{model._meta.model_name}_merged",
        actor=actor,
        object_type=model._meta.label_lower,
        object_id=duplicate.pk,
        data={"into": survivor.pk, "moved": moved},
    )
    key = model._meta.model_name or ""
    _propagate({key: {survivor.pk}})
    return moved
