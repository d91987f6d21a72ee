"""Field mappings in admin: edited on the connection form (defaults shown), and shown by "Test connection"
against a sample of real records — from the kinds' declarations alone."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.messages import get_messages
from django.urls import reverse

from apps.connectors import mappings
from apps.connectors.kinds.base import ConnectorKind, FieldMapping
from apps.connectors.kinds.hubspot import HubSpot
from apps.connectors.kinds.hubspot.streams import Companies
from apps.connectors.mappings import find_field, probe_mappings
from apps.connectors.models import Connection
from apps.simulator import Company

from .test_admin_actions import _action
from .test_hubspot_paging import InProcess, world


def _change(client: Any, connection: Connection, **fields: Any) -> Any:
    data = {
        "slug": connection.slug,
        "kind": connection.kind,
        "base_url": connection.base_url,
        "schedule": connection.schedule,
        "options": "{}",
        "enabled": "on",
        "streams-TOTAL_FORMS": "0",
        "streams-INITIAL_FORMS": "0",
        **fields,
    }
    return client.post(reverse("admin:connectors_connection_change", args=[connection.pk]), data)


def test_the_connection_form_shows_each_mapping_with_its_default(
    client: Any, ops_manager: Any, connections: dict[str, Connection]
) -> None:
    client.force_login(ops_manager)
    page = client.get(reverse("admin:connectors_connection_change", args=[connections["crm"].pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="field_map__hubspot__renewal_date"' in html
    assert 'placeholder="contract_renewal_date"' in html
    # A QuickBooks connection shows its own kind's mappings only.
    other = client.get(reverse("admin:connectors_connection_change", args=[connections["accounting"].pk]))
    assert "field_map__hubspot__" not in other.content.decode()


def test_editing_a_mapping_saves_it_in_options_and_blank_restores_the_default(
    client: Any, administrator: Any, connections: dict[str, Connection]
) -> None:
    crm = connections["crm"]
    client.force_login(administrator)

    response = _change(client, crm, field_map__hubspot__renewal_date="  renews_on ")
    assert response.status_code == 302, response.content.decode()[:2000]
    crm.refresh_from_db()
    assert crm.options["field_map"] == {"renewal_date": "renews_on"}
    assert HubSpot(crm).mapped("renewal_date") == "renews_on"

    assert _change(client, crm, field_map__hubspot__renewal_date="").status_code == 302
    crm.refresh_from_db()
    assert "field_map" not in crm.options
    assert HubSpot(crm).mapped("renewal_date") == "contract_renewal_date"


def test_a_field_name_with_a_line_break_is_refused(
    client: Any, administrator: Any, connections: dict[str, Connection]
) -> None:
    client.force_login(administrator)
    response = _change(client, connections["crm"], field_map__hubspot__renewal_date="a\nb")
    assert response.status_code == 200
    assert "control characters" in response.content.decode()


def test_test_connection_shows_the_mapped_field_and_the_value_a_sample_holds(
    client: Any, administrator: Any, connections: dict[str, Connection], company: Company
) -> None:
    client.force_login(administrator)
    response = _action(client, "test_connection", [connections["crm"]])
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    [mapping] = [m for m in shown if m.startswith("crm field mappings:")]
    assert "renewal_date → contract_renewal_date: '20" in mapping and "on companies " in mapping
    found_id = mapping.rsplit("on companies ", 1)[1].strip()
    assert company.hs_companies[found_id].renewal in mapping


def test_test_connection_says_why_a_mapped_field_is_missing(
    client: Any, administrator: Any, connections: dict[str, Connection]
) -> None:
    crm = connections["crm"]
    crm.options = {**crm.options, "field_map": {"renewal_date": "renews_on"}}
    crm.save()
    client.force_login(administrator)
    response = _action(client, "test_connection", [crm])
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    [mapping] = [m for m in shown if m.startswith("crm field mappings:")]
    assert "renewal_date → renews_on (default contract_renewal_date): missing — not on any of the" in mapping


# ---- the generic part: any kind's declarations, any vendor's record shape ---------------------------------


class Example(ConnectorKind):
    kind = "example"
    field_mappings: ClassVar[tuple[FieldMapping, ...]] = (
        FieldMapping("renewal", "contract_renewal_date", "a HubSpot-like property"),
        FieldMapping("critical", "custom_fields.custom_field_12.value", "a Procore-like custom field"),
        FieldMapping("job_type", "Job Type", "a QuickBooks-like CustomField entry"),
        FieldMapping("empty", "notes", "present but never filled"),
        FieldMapping("absent", "nowhere", "on no record"),
    )


def test_probes_find_fields_wherever_vendors_keep_them() -> None:
    samples = [
        (
            "records",
            [
                {"id": "1", "notes": "", "properties": {"contract_renewal_date": "2027-01-31"}},
                {
                    "id": 2,
                    "notes": None,
                    "custom_fields": {"custom_field_12": {"value": True}},
                    "CustomField": [{"DefinitionId": "1", "Name": "Job Type", "StringValue": "Retrofit"}],
                },
            ],
        )
    ]
    probes = {p.name: p for p in probe_mappings(Example(Connection(slug="x", options={})), samples)}
    assert (probes["renewal"].value, probes["renewal"].found_on) == ("2027-01-31", "records 1")
    assert (probes["critical"].value, probes["critical"].found_on) == (True, "records 2")
    assert probes["job_type"].value == "Retrofit"
    assert probes["empty"].reason == "present but empty on all 2 sampled record(s) that have it"
    assert probes["absent"].reason.startswith("not on any of the 2 sampled record(s) (records)")
    assert "no sample records" in probe_mappings(Example(Connection(slug="x")), [])[0].reason


def test_find_field_prefers_a_dotted_path_and_misses_cleanly() -> None:
    raw = {"a": {"b": 1}, "x": {"a.b": 2}}
    assert find_field(raw, "a.b") == 1
    assert find_field({"list": [{"name": "n", "value": 3}]}, "n") == 3
    assert find_field({"a": 1}, "b") is mappings._MISSING


def test_the_search_requests_the_mapped_property_and_normalise_reads_it() -> None:
    connection = Connection(
        slug="crm",
        kind="hubspot",
        options={
            "field_map": {"renewal_date": "renews_on"},
            "search_rate_budget": False,
            "rate_budget": False,
        },
    )
    kind = HubSpot(connection)
    from apps.simulator.state import DEFAULT_TOKENS, SimState

    client = InProcess(SimState(world([(2, 1)]), dict(DEFAULT_TOKENS)))
    list(Companies(kind).pages(client, {}, True))  # type: ignore[arg-type]
    assert "renews_on" in client.bodies[0]["properties"]
    assert "contract_renewal_date" not in client.bodies[0]["properties"]
    raw = {
        "id": "5",
        "properties": {
            "name": "Acme",
            "hs_lastmodifieddate": "2026-11-01T00:00:00Z",
            "renews_on": "2027-02-01",
            "contract_renewal_date": "1999-01-01",
        },
    }
    assert str(Companies(kind).normalise(raw)["renewal_date"]) == "2027-02-01"
