"""The OpenAPI generator: every operation documents the error responses the API can actually give.

DRF answers 401, 403 and 429 on any endpoint, 404 on any path with an id and on a page past the end of
a list, and 400 on a bad filter value or request body, always in the shape of ``ErrorSerializer``.
Declaring them once here keeps every endpoint (including other apps' ones under /api/) honest.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema

ERROR_TEXT = {
    "400": "Invalid input: a bad filter value or request body (field errors in error.detail)",
    "401": "Not signed in",
    "403": "The caller's role may not do this",
    "404": "No such object, not visible to the caller, or a page past the end",
    "429": "Rate limit exceeded (error.detail.wait: seconds)",
}


class AutoSchema(BaseAutoSchema):
    def _error_codes(self) -> list[str]:
        codes = ["401", "403", "429"]
        has_body = self.method in ("POST", "PUT", "PATCH")
        is_list = self._is_list_view()
        if has_body or is_list:
            codes.append("400")
        if "{" in self.path or is_list:
            codes.append("404")
        return codes

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        from .serializers import ErrorSerializer

        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = ERROR_TEXT[code]
                responses[code] = response
        return responses


# Django's form fields refuse NUL in text (PostgreSQL cannot store it): 400 "Null characters are not
# allowed". The schema says so, so a client (and schemathesis' positive-data check) knows.
NO_NUL = "^[^\\u0000]*$"


def _free_text(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "string" and not {"enum", "format", "pattern"} & set(schema)


def text_parameters_refuse_nul(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: a ``pattern`` without NUL on every free-text query parameter
    and body field (DRF's ``CharField`` refuses NUL with a 400; the schema says so once, here)."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.get("schema", {})
                if parameter.get("in") == "query" and _free_text(schema):
                    schema["pattern"] = NO_NUL
    for component in result.get("components", {}).get("schemas", {}).values():
        for field in component.get("properties", {}).values():
            for schema in [field, *field.get("oneOf", [])]:
                if _free_text(schema) and schema.get("maxLength") != 0 and not schema.get("readOnly"):
                    schema["pattern"] = NO_NUL
    return result
