"""One view that stores the raw body as an inbox row and answers: no lookup, no signature, no queue."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from apps.connectors.models import WebhookDelivery


@csrf_exempt
def bare(request: HttpRequest, connection_id: int) -> JsonResponse:
    now = timezone.now()
    row = WebhookDelivery.objects.create(
        connection_id=connection_id,
        event_id=uuid.uuid4().hex,
        received_at=now,
        status_changed_at=now,
        body=request.read(),
        signature_valid=False,
    )
    return JsonResponse({"status": "accepted", "id": row.pk}, status=202)


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [path("bare/<int:connection_id>/", bare), path("ping/", ping)]
