from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .signals import audit_actor


class AuditActorMiddleware:
    """Attribute permission changes made during a request (admin, API) to the signed-in user."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with audit_actor(request.user):
            return self.get_response(request)
