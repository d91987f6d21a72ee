"""Per-connection field mappings: a tenant's own property names, with the kind's names as defaults."""

from __future__ import annotations

from typing import ClassVar

import pytest

from apps.connectors.kinds.base import ConnectorKind, FieldMapping
from apps.connectors.models import Connection


class Kind(ConnectorKind):
    kind = "example"
    field_mappings: ClassVar[tuple[FieldMapping, ...]] = (
        FieldMapping(
            "renewal_date", "contract_renewal_date", "the company property holding the renewal date"
        ),
    )


def test_mapping_defaults_to_the_kinds_name():
    assert Kind(Connection(slug="crm", options={})).mapped("renewal_date") == "contract_renewal_date"


def test_connection_names_its_own_field():
    connection = Connection(slug="crm", options={"field_map": {"renewal_date": "renews_on"}})
    assert Kind(connection).mapped("renewal_date") == "renews_on"


def test_unknown_mapping_is_an_error_not_a_default():
    with pytest.raises(KeyError, match="no field mapping 'nope'"):
        Kind(Connection(slug="crm", options={})).mapped("nope")
