"""A worker's main process loads what an email needs (the URLconf for its signed links, the compiled email
templates) before its pool forks, and leaves it out of the garbage collector's full collections, so no
pool process pays for it on its first email of a burst."""

from __future__ import annotations

import gc

import pytest
from celery.signals import worker_init
from django.template import engines
from django.urls import clear_url_caches, get_resolver

from apps.escalations import tasks


def _template_cache() -> dict:
    loader = engines["django"].engine.template_loaders[0]  # the cached loader
    return loader.get_template_cache


# The signal reaches every receiver, Celery's own Django fixup too, which warns when no worker instance
# sends it: this test has none to send (a real worker passes itself).
@pytest.mark.filterwarnings(
    "ignore:DjangoFixup.on_worker_init called without a sender:celery.exceptions.FixupWarning"
)
def test_a_starting_worker_loads_the_urlconf_and_the_email_templates_before_it_forks() -> None:
    clear_url_caches()
    _template_cache().clear()
    assert not get_resolver()._populated

    gc.unfreeze()

    worker_init.send(sender=None)

    frozen = gc.get_freeze_count()
    gc.unfreeze()
    assert frozen > 0  # what was loaded before the fork is left out of every collection
    assert get_resolver()._populated
    assert set(tasks.MAIL_TEMPLATES) <= set(_template_cache())
    assert "escalations/email/escalation.html" in tasks.MAIL_TEMPLATES
