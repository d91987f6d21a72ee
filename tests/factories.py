"""factory_boy factories for the canonical entities, shared by every app's tests."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.connectors.models import Connection
from apps.entities.models import (
    ChangeOrder,
    Client,
    CrmOwner,
    Document,
    FinancialLine,
    Milestone,
    Project,
    Submittal,
    Vendor,
)


class ConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Connection
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"conn{n}")
    kind = "procore"
    base_url = "http://127.0.0.1:9"


class SourcedFactory(factory.django.DjangoModelFactory):
    source = factory.SubFactory(ConnectionFactory, slug="pm")
    external_id = factory.Sequence(lambda n: str(10_000 + n))
    source_updated_at = factory.LazyFunction(timezone.now)
    content_hash = "0" * 32
    synced_at = factory.LazyFunction(timezone.now)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.django.Password("pw")


class CrmOwnerFactory(SourcedFactory):
    class Meta:
        model = CrmOwner

    source = factory.SubFactory(ConnectionFactory, slug="crm", kind="hubspot")
    email = factory.Sequence(lambda n: f"owner{n}@example.test")
    name = factory.Sequence(lambda n: f"Owner {n}")


class ClientFactory(SourcedFactory):
    class Meta:
        model = Client

    source = factory.SubFactory(ConnectionFactory, slug="crm", kind="hubspot")
    name = factory.Sequence(lambda n: f"Client {n}")
    domain = factory.Sequence(lambda n: f"client{n}.test")
    renewal_date = None


class ProjectFactory(SourcedFactory):
    class Meta:
        model = Project

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    number = factory.Sequence(lambda n: f"P-{n:05d}")
    contract_value = Decimal("1000000.00")
    schedule_status = "on_track"


class ChangeOrderFactory(SourcedFactory):
    class Meta:
        model = ChangeOrder

    project = factory.SubFactory(ProjectFactory)
    project_ref = factory.LazyAttribute(lambda o: o.project.external_id)
    number = factory.Sequence(lambda n: str(n))
    title = "Extra work"
    status = ChangeOrder.Status.PENDING
    amount = Decimal("1000.00")
    created_upstream_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=3))


class MilestoneFactory(SourcedFactory):
    class Meta:
        model = Milestone

    project = factory.SubFactory(ProjectFactory)
    project_ref = factory.LazyAttribute(lambda o: o.project.external_id)
    name = "Milestone"
    due_date = factory.LazyFunction(lambda: timezone.localdate() - dt.timedelta(days=10))
    completed_date = None


class FinancialLineFactory(SourcedFactory):
    class Meta:
        model = FinancialLine

    source = factory.SubFactory(ConnectionFactory, slug="accounting", kind="quickbooks")
    kind = FinancialLine.Kind.INVOICE
    project = factory.SubFactory(ProjectFactory)
    amount = Decimal("100.00")
    balance = Decimal("0.00")


class DocumentFactory(SourcedFactory):
    """A document an AI tool processed; unlinked unless given links."""

    class Meta:
        model = Document

    source = factory.SubFactory(ConnectionFactory, slug="docs", kind="docai")
    tool = "azure-document-intelligence"
    model_id = "prebuilt-invoice"
    model_version = "2024-11-30"
    label = "invoice"
    confidence = 0.95
    amount = Decimal("1000.00")
    project = None
    analyzed_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=1))


class VendorFactory(SourcedFactory):
    class Meta:
        model = Vendor

    name = factory.Sequence(lambda n: f"Vendor {n}")


class SubmittalFactory(SourcedFactory):
    class Meta:
        model = Submittal

    project = factory.SubFactory(ProjectFactory)
    project_ref = factory.LazyAttribute(lambda o: o.project.external_id)
    vendor = factory.SubFactory(VendorFactory)
    revision = 0
    created_upstream_at = factory.LazyFunction(timezone.now)
