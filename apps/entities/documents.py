"""Linking documents processed by AI tools to the records they name (SPEC "AI tools as sources").

Reference numbers first, all exact and set-based (``DOCUMENT_STATEMENTS``, run by ``link_entities`` after
every sync and webhook): the invoice whose id the document names (``invoice_ref``), the project whose number
or accounting job id it names (``project_ref``, else the invoice's project), the change order of that
project with the number it names (``change_order_ref``), the project's client. Then names: a client or
vendor whose name equals the one extracted, ignoring case; then :func:`documents_resolve` scores what is
still without a client or vendor by name with the thresholds of ``ResolutionSettings`` — auto-link above,
the review queue (:class:`DocumentCandidate`) between, nothing below: the document stays unlinked, listed
in admin. Statements only set links (a document a person linked, ``link_method = 'manual'``, is never
touched), and only write rows whose value changes, so running them twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from apps.audit.services import Actor, audit_record

from .changes import entities_changed_publish
from .documents_sql import DOCUMENT_STATEMENTS  # noqa: F401 - re-exported
from .models import Client, Document, DocumentCandidate, ResolutionSettings, Vendor

ACTOR = "system:resolution"


@dataclass
class DocumentResolution:
    auto_linked: int = 0
    queued: int = 0
    changed: set[int] = field(default_factory=set)


def _score(
    documents: list[tuple[int, str]],
    rights: Iterable[tuple[int, str]],
    settings: ResolutionSettings,
    known: set[tuple[int, int]],
) -> tuple[dict[int, int], list[tuple[int, int, float]]]:
    """(document -> right to auto-link, pairs for review) by name score, as the customers' pass routes."""
    from .resolution import _route, normalise_name, score_pairs

    right_list = list(rights)
    lefts = [normalise_name(name) for _, name in documents]
    hits: dict[int, list[tuple[int, float]]] = {}
    for i, j, score in score_pairs(
        lefts, [normalise_name(n) for _, n in right_list], cutoff=settings.review_threshold
    ):
        hits.setdefault(i, []).append((j, score))
    auto: dict[int, int] = {}
    review: list[tuple[int, int, float]] = []
    for i, found in hits.items():
        doc_id = documents[i][0]
        best, queue = _route(found, settings)
        if best is not None:
            auto[doc_id] = right_list[best][0]
        for j, score in queue:
            if (doc_id, right_list[j][0]) not in known:
                review.append((doc_id, right_list[j][0], score))
    return auto, review


@transaction.atomic
def documents_resolve(*, settings: ResolutionSettings | None = None) -> DocumentResolution:
    """Score the names of documents still without a client or vendor; link, queue or leave unlinked."""
    settings = settings or ResolutionSettings.current()
    result = DocumentResolution()
    live = Document.objects.live().exclude(link_method=Document.LinkMethod.MANUAL)
    for target, model, name_field in (("client", Client, "client_name"), ("vendor", Vendor, "vendor_name")):
        documents = list(
            live.filter(**{f"{target}__isnull": True})
            .exclude(**{name_field: ""})
            .values_list("id", name_field)
        )
        if not documents:
            continue
        rights = model.objects.live()
        if model is Client:
            rights = rights.filter(merged_into__isnull=True)
        known = set(
            DocumentCandidate.objects.filter(
                document_id__in=[d for d, _ in documents], **{f"{target}__isnull": False}
            ).values_list("document_id", f"{target}_id")
        )
        auto, review = _score(documents, rights.values_list("id", "name"), settings, known)
        for doc_id, right_id in auto.items():
            Document.objects.filter(pk=doc_id).update(
                **{f"{target}_id": right_id},
                link_method=models.Case(
                    models.When(link_method="", then=models.Value(Document.LinkMethod.FUZZY)),
                    default=models.F("link_method"),
                ),
            )
            audit_record(
                action="entities.document_linked",
                actor=ACTOR,
                object_type="entities.document",
                object_id=doc_id,
                data={target: right_id, "method": "fuzzy"},
            )
            result.changed.add(doc_id)
        DocumentCandidate.objects.bulk_create(
            [DocumentCandidate(document_id=d, score=s, **{f"{target}_id": r}) for d, r, s in review],
            ignore_conflicts=True,
        )
        result.auto_linked += len(auto)
        result.queued += len(review)
    return result


@transaction.atomic
def document_candidate_link(*, candidate: DocumentCandidate, actor: Actor) -> None:
    """A person says: this document names that client (or vendor). Links it by hand and audits it."""
    locked = DocumentCandidate.objects.select_for_update().get(pk=candidate.pk)
    if locked.status != DocumentCandidate.Status.PENDING:
        raise ValueError(f"candidate {candidate.pk} was already {locked.status}")
    document = Document.objects.select_for_update().get(pk=locked.document_id)
    if locked.client_id:
        document.client_id = locked.client_id
    else:
        document.vendor_id = locked.vendor_id
    document.link_method = Document.LinkMethod.MANUAL
    document.save(update_fields=["client", "vendor", "link_method"])
    _decide(locked, DocumentCandidate.Status.LINKED, actor)
    DocumentCandidate.objects.filter(
        document_id=document.pk,
        status=DocumentCandidate.Status.PENDING,
        **({"client__isnull": False} if locked.client_id else {"vendor__isnull": False}),
    ).update(status=DocumentCandidate.Status.REJECTED, decided_at=timezone.now())
    audit_record(
        action="entities.document_linked",
        actor=actor,
        object_type="entities.document",
        object_id=document.pk,
        data={"client": locked.client_id, "vendor": locked.vendor_id, "score": locked.score},
    )
    _notify_rules({document.pk})


@transaction.atomic
def document_candidate_reject(*, candidate: DocumentCandidate, actor: Actor) -> None:
    """ "Not a match": the pair is remembered and never proposed again."""
    locked = DocumentCandidate.objects.select_for_update().get(pk=candidate.pk)
    if locked.status != DocumentCandidate.Status.PENDING:
        raise ValueError(f"candidate {candidate.pk} was already {locked.status}")
    _decide(locked, DocumentCandidate.Status.REJECTED, actor)
    audit_record(
        action="entities.document_match_rejected",
        actor=actor,
        object_type="entities.document",
        object_id=locked.document_id,
        data={"client": locked.client_id, "vendor": locked.vendor_id, "score": locked.score},
    )


def _decide(candidate: DocumentCandidate, status: str, actor: Actor) -> None:
    candidate.status = status
    candidate.decided_at = timezone.now()
    candidate.decided_by = actor if isinstance(actor, models.Model) else None  # type: ignore[assignment]
    candidate.save(update_fields=["status", "decided_at", "decided_by"])


def _notify_rules(ids: set[int]) -> None:
    if not ids:
        return
    # The candidate's decision set the links itself: announce the change without deriving them again.
    entities_changed_publish({"document": ids}, trigger="resolution", link=False)


def unlinked(queryset: Any = None) -> Any:
    """Live documents nothing links: no project, client, vendor, change order or invoice."""
    base = Document.objects.live() if queryset is None else queryset
    return base.filter(
        project__isnull=True,
        client__isnull=True,
        vendor__isnull=True,
        change_order__isnull=True,
        invoice__isnull=True,
    )
