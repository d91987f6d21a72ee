"""The pipeline (apps/orchestration/pipeline.py): entity changes → pending → data quality → decide → act."""

from __future__ import annotations

from typing import Any

import pytest

from apps.entities.changes import entities_changed_publish
from apps.escalations.models import Escalation
from apps.orchestration import pipeline, tasks
from apps.quality.models import Finding
from apps.quality.services import quality_scan
from apps.rules.evaluation import triggers
from apps.rules.evaluation.services import rules_import
from apps.rules.models import Decision, PendingEvaluation
from apps.rules.tests.test_services import fresh_streams
from tests.factories import ClientFactory, CrmOwnerFactory, ProjectFactory

GUARDED = """
- key: project-quality
  name: Project data has errors
  subject: project
  when:
    all:
      - {fact: project.data_quality_errors, op: gt, value: 0}
  route: standard
  severity: medium
  actions: [flag_dashboard]
  cooldown: 7d
"""


@pytest.mark.django_db
def test_a_guard_on_data_quality_decides_on_this_changes_findings(
    scheduled_flushes: list[float], django_capture_on_commit_callbacks: Any
) -> None:
    """Before the pipeline, the scan ran 30 s after a sync (never after a webhook) while the evaluation ran
    2 s after: a project that lost its client was decided with zero data-quality errors."""
    rules_import(text=GUARDED, actor="system:test")
    fresh_streams()
    project = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory()))
    quality_scan()
    assert not Finding.objects.filter(
        subject_type="project", subject_id=project.pk, severity="error"
    ).exists()

    # A webhook: the project no longer has a client (a missing-field error), in its own transaction.
    with django_capture_on_commit_callbacks(execute=True):
        type(project).objects.filter(pk=project.pk).update(client=None)
        entities_changed_publish({"project": {project.pk}}, trigger="webhook", link=False)
    assert scheduled_flushes, "the change queued a flush"
    assert PendingEvaluation.objects.filter(subject_type="project", subject_id=project.pk).exists()

    pipeline.flush_pending()

    decision = Decision.objects.get(rule_version__rule__key="project-quality", subject_id=project.pk)
    assert decision.outcome == "matched"
    assert decision.facts["project.data_quality_errors"]["value"] == 1
    assert Escalation.objects.filter(rule__key="project-quality", subject_id=project.pk).count() == 1
    assert not PendingEvaluation.objects.exists()


@pytest.mark.django_db
def test_findings_that_change_mark_their_projects_even_when_the_change_did_not(
    scheduled_flushes: list[float], django_capture_on_commit_callbacks: Any
) -> None:
    """A finding resolved or opened by the scan marks the project whose data-quality facts it moves."""
    rules_import(text=GUARDED, actor="system:test")
    fresh_streams()
    project = ProjectFactory(client=None)
    other = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory()))
    with django_capture_on_commit_callbacks(execute=True):
        entities_changed_publish({"project": {other.pk}}, trigger="sync", link=False)
    marked = pipeline.quality_before_deciding()
    assert project.pk in marked["project"]
    pending = PendingEvaluation.objects.get(subject_type="project", subject_id=other.pk)
    assert pending.trigger == "sync"


def test_the_pipelines_tasks_keep_their_names() -> None:
    """Queued tasks and beat rows name them; the rules look two of them up by these names."""
    assert (
        tasks.evaluate_pending.name == triggers.EVALUATE_PENDING_TASK == "apps.rules.tasks.evaluate_pending"
    )
    assert tasks.evaluate_run_task.name == triggers.EVALUATE_RUN_TASK
    assert triggers.task(triggers.EVALUATE_PENDING_TASK) is tasks.evaluate_pending._get_current_object()
    assert tasks.evaluate_all.name == "apps.rules.tasks.evaluate_all"
    assert tasks.evaluate_subjects_task.name == "apps.rules.tasks.evaluate_subjects_task"


def test_a_process_that_is_not_a_worker_finds_the_pipelines_tasks() -> None:
    """Publishing from a web process or a command queues the run task by name: found there too, although
    nothing in such a process imports apps/orchestration/tasks.py."""
    import subprocess
    import sys

    code = (
        "import django; django.setup(); import sys; "
        "assert 'apps.orchestration.tasks' not in sys.modules; "
        "from apps.rules.evaluation.triggers import EVALUATE_RUN_TASK, EVALUATE_PENDING_TASK, task; "
        "print(task(EVALUATE_RUN_TASK).name, task(EVALUATE_PENDING_TASK).name)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [triggers.EVALUATE_RUN_TASK, triggers.EVALUATE_PENDING_TASK]
