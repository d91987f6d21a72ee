"""Logs: JSON lines with request and task ids; a 4xx is one line without a traceback."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from django.core.exceptions import PermissionDenied
from django.test import override_settings
from django.urls import path

from apps.ops import context
from apps.ops.logs import JsonLineFormatter, logging_config
from config.urls import urlpatterns as site_urls

pytestmark = pytest.mark.django_db

probe = logging.getLogger("fulcrum.probe")


def _logged(request):
    probe.info("inside the view", extra={"answer": 42})
    from django.http import HttpResponse

    return HttpResponse("ok")


def _forbidden(request):
    raise PermissionDenied("nope")


def _broken(request):
    raise RuntimeError("boom")


urlpatterns = [
    path("logged/", _logged),
    path("forbidden/", _forbidden),
    path("broken/", _broken),
    *site_urls,
]


@pytest.fixture
def json_lines():
    """Route the root logger through the production (JSON) config into a buffer; yield its parsed lines."""
    buffer = io.StringIO()
    config = logging_config(log_format="json", level="INFO")
    config["handlers"]["console"]["stream"] = buffer
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(config)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        from django.conf import settings

        logging.config.dictConfig(settings.LOGGING)
        root.handlers[:], root.level = saved


@override_settings(ROOT_URLCONF=__name__)
def test_a_request_logs_json_with_its_request_id(client, json_lines):
    response = client.get("/logged/")
    rid = response["X-Request-ID"]
    assert len(rid) == 32
    [line] = [x for x in json_lines() if x["logger"] == "fulcrum.probe"]
    assert line["message"] == "inside the view" and line["level"] == "INFO"
    assert line["request_id"] == rid and line["task_id"] is None and line["answer"] == 42
    assert line["time"].endswith("+00:00")


@override_settings(ROOT_URLCONF=__name__)
def test_a_sane_incoming_request_id_is_kept_and_a_hostile_one_replaced(client, json_lines):
    assert client.get("/logged/", HTTP_X_REQUEST_ID="lb-0123456789abcdef")["X-Request-ID"] == (
        "lb-0123456789abcdef"
    )
    hostile = client.get("/logged/", HTTP_X_REQUEST_ID='x"\ninjected')["X-Request-ID"]
    assert hostile != 'x"\ninjected' and len(hostile) == 32


@override_settings(ROOT_URLCONF=__name__)
def test_a_4xx_is_logged_once_without_traceback(client, json_lines):
    response = client.get("/forbidden/")
    assert response.status_code == 403
    lines = [x for x in json_lines() if x["logger"].startswith("django")]
    assert len(lines) == 1, lines
    assert lines[0]["level"] == "WARNING" and lines[0]["path"] == "/forbidden/"
    assert lines[0]["status_code"] == 403 and "exc_info" not in lines[0]
    assert lines[0]["request_id"] == response["X-Request-ID"]


def test_api_4xx_are_logged_once_each(client, json_lines):
    client.get("/api/no-such-endpoint/")
    client.get("/api/escalations/")  # 401
    lines = [x for x in json_lines() if x["logger"].startswith("django")]
    assert [(x["status_code"], x["path"]) for x in lines] == [
        (404, "/api/no-such-endpoint/"),
        (401, "/api/escalations/"),
    ]
    assert all("exc_info" not in x for x in lines)


@override_settings(ROOT_URLCONF=__name__)
def test_a_5xx_keeps_its_traceback(json_lines):
    from django.test import Client

    response = Client(raise_request_exception=False).get("/broken/")
    assert response.status_code == 500
    [line] = [x for x in json_lines() if x["logger"] == "django.request"]
    assert line["level"] == "ERROR" and "RuntimeError: boom" in line["exc_info"]


def test_task_lines_carry_the_task_id_and_the_request_that_queued_it(json_lines):
    from celery import shared_task

    @shared_task(name="apps.ops.tests.probe_task")
    def probe_task() -> str:
        probe.info("in the task")
        return "ok"

    headers: dict[str, str] = {}
    token = context.request_id.set("req-0123456789")
    try:
        context._publish(headers=headers)
    finally:
        context.request_id.reset(token)
    assert headers == {context.TASK_HEADER: "req-0123456789"}

    result = probe_task.apply(task_id="task-42", headers=headers)
    assert result.get() == "ok"
    [line] = [x for x in json_lines() if x["message"] == "in the task"]
    assert line["task_id"] == "task-42" and line["task_name"] == "apps.ops.tests.probe_task"
    assert line["request_id"] == "req-0123456789"
    probe.info("after the task")
    after = json_lines()[-1]
    assert after["task_id"] is None and after["request_id"] is None


def test_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_config(log_format="xml", level="INFO")


def test_unserialisable_extras_do_not_break_a_line():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.thing = object()
    record.request_id = record.task_id = record.task_name = None
    assert json.loads(JsonLineFormatter().format(record))["thing"].startswith("<object")
