"""OAuth2 token endpoints: QuickBooks' ``/oauth2/v1/tokens/bearer`` and Procore's ``/oauth/token``.

Only the refresh grant (what a running connector needs). Client credentials come as form fields or HTTP Basic,
like both vendors accept. Answers 400 ``invalid_grant`` for a wrong or already-used refresh token.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

from .common import Request, Response, json_response
from .state import SimState

PATHS = {"/oauth2/v1/tokens/bearer": "quickbooks", "/oauth/token": "procore"}


def handle(state: SimState, req: Request) -> Response | None:
    system = PATHS.get(req.path.rstrip("/"))
    if system is None:
        return None
    if req.method != "POST":
        return json_response(405, {"error": "method_not_allowed"})
    form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    scheme, _, encoded = (req.header("authorization") or "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return json_response(401, {"error": "invalid_client"})
    if form.get("grant_type") != "refresh_token":
        return json_response(400, {"error": "unsupported_grant_type"})
    grant = state.oauth.get(system)
    answer = grant.refresh(client_id, client_secret, form.get("refresh_token", "")) if grant else None
    if answer is None:
        return json_response(400, {"error": "invalid_grant"})
    return json_response(200, answer)
