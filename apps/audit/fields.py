"""A JSON model field kept in a PostgreSQL ``text`` column, as the exact text that was written.

The audit chain hashes each entry's data as canonical JSON. Stored as ``jsonb``, that text was lost
(jsonb reorders keys and reformats numbers), so every write paid PostgreSQL to parse it and every
verification re-serialised it in Python. Kept as text, the hashed bytes are what the table holds:
writes skip the jsonb parse and ``verify_audit`` hashes the column as read.

Reads decode the text like any JSONField. JSON lookups and transforms (``data__username``,
``data__has_key``, ...) cast the column to jsonb in the query, so they behave as on a jsonb column
(unindexed, as before).
"""

from __future__ import annotations

from typing import Any

from django.db.models import JSONField, Lookup, Transform
from django.db.models.expressions import Col
from django.db.models.functions import Cast


def _as_jsonb(lhs: Any, field: JSONField[Any, Any]) -> Any:
    if isinstance(lhs, Col) and lhs.target is field:
        return Cast(lhs, JSONField())
    return lhs


class JSONTextField(JSONField):
    """JSON in a text column; see the module docstring."""

    description = "JSON kept as text"

    def db_type(self, connection: Any) -> str:
        return "text"

    def get_lookup(self, lookup_name: str) -> Any:
        lookup = super().get_lookup(lookup_name)
        if lookup is None or lookup_name == "isnull":
            return lookup
        return _CastingFactory(lookup, self)

    def get_transform(self, name: str) -> Any:
        transform = super().get_transform(name)
        if transform is None:
            return None
        return _CastingFactory(transform, self)


class _CastingFactory:
    """Builds a lookup or transform over ``column::jsonb`` instead of the text column itself."""

    def __init__(self, wrapped: type[Lookup[Any]] | type[Transform] | Any, field: JSONTextField) -> None:
        self.wrapped = wrapped
        self.field = field

    def __call__(self, lhs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(_as_jsonb(lhs, self.field), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
