import time
from collections import Counter
from typing import Any

from celery import shared_task
from celery.signals import worker_init

from . import mail_return
from .delivery import (
    claims_lapsing,
    deliveries_attempt,
    deliveries_dispatch,
    delivery_attempt,
    due_delivery_ids,
    queue_for,
)
from .policies import policy_audit, policy_claim_due, policy_release_closed, policy_step_apply


@shared_task(acks_late=True, ignore_result=True)
def deliver(delivery_id: int) -> str:
    """Send one outbox row (safe to run twice: the claim is a conditional UPDATE)."""
    return delivery_attempt(delivery_id)


@shared_task(acks_late=True, ignore_result=True)
def deliver_many(delivery_ids: list[int]) -> str:
    """Send a chunk of outbox rows (``deliveries_attempt``: one claim, one SMTP connection); one row's
    unexpected error is logged and the rest still go (the row stays claimed, and beat's sweeper tries it
    again when the claim ends)."""
    return _summary(len(delivery_ids), deliveries_attempt(delivery_ids))


@shared_task(ignore_result=True)
def probe_mail_server(started: float) -> str:
    """While emails wait on an unreachable mail server: release them when it answers (``mail_return``)."""
    from .mail_return import probe

    return probe(started)


# Every template an outbox email renders (``actions/email.py``, ``actions/notices.py``).
MAIL_TEMPLATES = [
    f"escalations/email/{name}.{kind}"
    for name in ("escalation", "notice", "digest")
    for kind in ("txt", "html")
]


@worker_init.connect
def warm_mail_before_fork(**_: Any) -> None:
    """A worker starting: load the URLconf (an email's signed links are reversed URLs) and compile the email
    templates in the main process, before the pool forks, so every pool process starts with them instead
    of spending ~140 ms of CPU on its first email (a burst meets every pool process cold at once). Then
    the objects loaded so far are moved out of the garbage collector's reach (``gc.freeze``, as Python's
    documentation advises before a fork): a pool process's full collection otherwise walks all of them
    (~70 ms, measured) and touches their pages. No database access: the forked pool must not share a
    connection."""
    import gc

    from django.template.loader import get_template
    from django.urls import get_resolver

    # Importing every URL module and building the reverse lookup tables, as the first reverse() would.
    get_resolver().reverse_dict  # noqa: B018 - read for its side effect
    for name in MAIL_TEMPLATES:
        get_template(name)
    gc.freeze()


def _summary(rows: int, results: dict[int, str]) -> str:
    counts = Counter(results.values())
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"{rows} rows: {states or 'none due'}"


@shared_task(ignore_result=True)
def deliver_due() -> str:
    """Beat sweeper: everything due, including rows whose worker died mid-send. Emails and the other
    ``delivery`` rows are sent here; vendor write-backs are handed to the ``writeback`` queue (one slow
    or rate-limited vendor would otherwise hold every email behind it in this task)."""
    from .models import Delivery

    ids = due_delivery_ids()
    actions = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "action"))
    upstream = sorted(pk for pk in ids if queue_for(actions.get(pk, "")) == "writeback")
    if upstream:
        deliveries_dispatch(upstream)
    handed = set(upstream)
    deliveries_attempt([pk for pk in ids if pk not in handed])
    probe = ", mail server probe started" if mail_return.watch_if_waiting() else ""
    return f"{len(ids)} due, {len(upstream)} handed to writeback{probe}"


@shared_task(ignore_result=True)
def deliver_when_claims_lapse() -> str:
    """A worker (re)started: the outbox rows a killed worker had claimed are due again when their claims
    lapse, so an outbox sweep is queued for each moment claims lapse (``claims_lapsing``), not one a whole
    claim after the restart (which the soak saw land in the mail server's next outage)."""
    moments = claims_lapsing()
    now = time.time()
    for at in moments:
        deliver_due.apply_async(countdown=max(0.0, at - now) + 0.05)
    return f"{len(moments)} outbox sweeps queued for lapsing claims"


@shared_task(acks_late=True, ignore_result=True)
def apply_policy_step(escalation_id: int, step: int, token: str) -> str:
    """One policy step; a duplicate or late copy finds the token moved on and does nothing."""
    return policy_step_apply(escalation_id=escalation_id, step=step, token=token)


@shared_task(ignore_result=True)
def sweep_policy_steps() -> str:
    """Beat: claim due policy steps (SKIP LOCKED, with a lease) and queue one fenced task per step."""
    released = policy_release_closed()
    due = policy_claim_due()
    for item in due:
        apply_policy_step.delay(item.escalation_id, item.step, item.token)
    return f"{len(due)} steps queued, {released} closed released"


@shared_task(ignore_result=True)
def audit_policies() -> str:
    """Beat: report escalations whose policy stalled."""
    return f"{policy_audit()} stalled"
