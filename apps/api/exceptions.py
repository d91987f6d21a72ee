"""One JSON error shape for every failure: ``{"error": {"code", "message", "detail"}}``.

``code`` is stable and machine-readable (``not_authenticated``, ``permission_denied``, ``not_found``,
``invalid``, ``conflict``, ``throttled``, ``server_error``...), ``message`` is for people, ``detail``
carries field errors (400) or the wait in seconds (429), else null.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.escalations.services import TransitionError

logger = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."
    default_code = "conflict"


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def _normalise(exc: Exception) -> Exception:
    if isinstance(exc, TransitionError):
        return Conflict(str(exc))
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None)
    return exc


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    exc = _normalise(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: log with the traceback (the response below swallows it) and answer in the API's shape.
        logger.exception("API request failed", exc_info=exc)
        return Response(
            error_body("server_error", "Internal server error."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "Invalid input.", response.data)
    elif isinstance(exc, exceptions.Throttled):
        response.data = error_body("throttled", str(exc.detail), {"wait": getattr(exc, "wait", None)})
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response.data = error_body(str(code), str(exc.detail))
    return response


@csrf_exempt  # an unknown path is 404 whatever the method; CSRF's HTML 403 must not answer first
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/ answer in the API's shape, not with the HTML 404 page."""
    return JsonResponse(error_body("not_found", "No such endpoint."), status=404)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: JSON under /api/ (every answer there is JSON), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("permission_denied", f"CSRF check failed: {reason}"), status=403)
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason=reason)
