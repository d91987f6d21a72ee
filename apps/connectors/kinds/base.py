"""What every connector kind provides: its streams, its webhook edge, reads by id, and write-backs.

Each :class:`Stream` pages raw vendor records (``pages``) and turns one into the canonical entity's fields
(``normalise``). Streams know nothing about the database: the sync service upserts what they yield and saves
the cursor each page reports, in one transaction per page.

Adding a vendor is one folder, ``kinds/<kind>/``, and one line in ``kinds/__init__.py`` (``KINDS``):

- ``__init__.py``: a :class:`ConnectorKind` subclass with ``kind`` (the stored name), ``label`` (the name in
  admin: ``Connection.kind`` choices come from the registry, so no migration or model edit is needed),
  ``stream_classes`` in load order, auth (``token_url``, ``auth_headers``) and ``rate_budget_default``;
- ``streams.py``: its :class:`Stream` s. A stream whose vendor document holds several entity rows (a bill's
  job-charged lines) overrides ``explode`` and sets ``line_items``; one whose id is not at ``id``/``Id``
  overrides ``record_id``;
- ``webhooks.py`` (if the vendor sends webhooks): pure functions behind the kind's webhook hooks —
  ``check_signature`` (raise ``Rejected``), ``webhook_events`` (an ``Events`` of ``Hint`` s, unknown event
  types counted as ignored, ``Malformed`` only for a body of the wrong shape), ``webhook_event_id`` /
  ``webhook_split`` (the inbox identity, one row per independent event); set ``receives_webhooks``, and
  ``signs_uri`` when the signature covers the request URI;
- ``fetch_records`` when the vendor's webhooks carry ids only (processing, the id sweep and Rebuild's
  re-check read records by id through it), ``after_webhook`` for work a delivery triggers (QuickBooks:
  catch up after silence), ``write_note`` for write-backs;
- its simulator module under ``apps/simulator/`` and its contract files under
  ``apps/connectors/tests/contracts/<kind>/``, each citing the vendor's doc page (docs/VENDORS.md).

Generic code (the receiver, processing, sync, the sweep) calls only these hooks: it never names a vendor.
"""

from __future__ import annotations

import datetime as dt
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from django.db import models
from django.utils import timezone

from apps.connectors.http import HttpClient, UpstreamPermanent
from apps.connectors.webhooks.schemes import Events, Headers, Inbound, Malformed, Rejected, body_hash
from apps.errors import Permanent

if TYPE_CHECKING:
    from apps.connectors.models import Connection, WebhookDelivery

Record = dict[str, Any]
Cursor = dict[str, Any]
# Re-read this much before the saved cursor: records committed upstream slightly out of timestamp order
# (and the records sharing the cursor's own timestamp) are read again and deduplicated by the upsert.
LOOKBACK = dt.timedelta(seconds=60)
# What an incremental run of a stream with a reconciliation share reads (``Stream.reads``).
READS = ("both", "changes", "share")
# Never read the last minute: a record being written upstream now may still appear with an earlier timestamp.
SETTLE = dt.timedelta(seconds=60)


class BadRecord(Exception):
    """A record that cannot become an entity; it is quarantined with ``reason`` and the run goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKind(LookupError, Permanent):
    pass


class UnknownStream(LookupError, Permanent):
    pass


class ConfigurationError(ValueError, Permanent):
    """The connection lacks an option or credential its kind needs."""


@dataclass(frozen=True)
class Page:
    """One page of raw records and the cursor that is safe to save once they are stored."""

    records: list[Record]
    cursor: Cursor


class Stream(ABC):
    """One kind of upstream record loaded into one entity model."""

    name: ClassVar[str]
    model: ClassVar[type[models.Model]]
    entity: ClassVar[str]  # the key of this stream's ids in the change set handed to the rules
    # One vendor document holds several entity rows, keyed "<document id>:<line id>" (``explode``): a
    # document read again whole also says which of its lines are gone.
    line_items: ClassVar[bool] = False
    # A stream whose incremental reads are the changes plus a reconciliation share (Procore's project lists:
    # a rotating share of projects re-read for changes whose webhook was lost). ``reads``, set per run by
    # the sync (READS): "both", the changes only (the scheduled incremental), or the share only (its own
    # reconciliation task, queued after the incremental). Other streams read the changes whatever it says.
    has_share: ClassVar[bool] = False
    reads: str = "both"

    def __init__(self, kind: ConnectorKind) -> None:
        self.kind = kind

    @abstractmethod
    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        """Yield pages oldest-first from ``cursor`` (everything when ``full``)."""

    @abstractmethod
    def normalise(self, raw: Record) -> Record:
        """The entity's fields, with ``external_id`` and ``source_updated_at``; or raise BadRecord."""

    def scope(self) -> dict[str, Any]:
        """Filters picking this stream's rows among the connection's in ``model`` (streams may share one)."""
        return {}

    def record_id(self, raw: Record) -> str:
        """A raw vendor document's upstream id (matching records fetched by id to what was asked)."""
        value = raw.get("id", raw.get("Id", "")) if isinstance(raw, dict) else ""
        return "" if value is None else str(value)

    def explode(self, records: list[Record]) -> list[Record]:
        """The stream's records in a page of vendor documents (with ``line_items``: one per line)."""
        return records

    def document_version(self, raw: Record, now: dt.datetime) -> dt.datetime:
        """The version a document read whole carries, for tombstoning the lines no longer on it."""
        return now


@dataclass(frozen=True)
class FieldMapping:
    """A tenant-specific vendor field the kind reads (a custom property, a custom field, a class name).

    Each connection may name another field in ``options.field_map[name]``; ``default`` is read otherwise.
    Admin's "Test connection" shows, for a sample record, the value each mapping finds or why it has none.
    """

    name: str
    default: str
    help: str


class ConnectorKind:
    """A vendor: its streams in load order (parents before children), auth, webhook edge, reads by id and
    write-backs. See the module docstring for what adding one takes."""

    kind: ClassVar[str]
    label: ClassVar[str]  # the kind's name in admin (``Connection.kind`` choices)
    stream_classes: ClassVar[list[type[Stream]]] = []
    # The tenant-specific names this kind reads, with today's names as defaults (SPEC "Upstream shapes").
    field_mappings: ClassVar[tuple[FieldMapping, ...]] = ()
    # OAuth2 token endpoint for refreshing access tokens ("" = static tokens); options.token_url overrides.
    token_url: ClassVar[str] = ""
    token_basic_auth: ClassVar[bool] = True  # client id/secret as HTTP Basic (else form fields)
    # The vendor's published request budget per tenant: (calls, seconds); options.rate_budget overrides.
    rate_budget_default: ClassVar[tuple[int, float] | None] = None
    # Calls of that budget reserved per Redis round trip (``RateBudget(lease=)``; options.rate_budget_lease
    # overrides): 1 asks Redis before every call. Never more than 1/50 of the budget's window.
    rate_budget_lease: ClassVar[int] = 1

    # ---- the webhook edge: class-level, since the receiver verifies before it loads a connection ----
    receives_webhooks: ClassVar[bool] = False
    signs_uri: ClassVar[bool] = False  # the signature covers the request URI (the receiver passes its forms)
    keeps_malformed: ClassVar[bool] = False  # authentic but malformed deliveries are kept for forensics

    @classmethod
    def webhook_verify(cls, inbound: Inbound, secrets: list[str]) -> None:
        """Raise Rejected unless ``inbound`` is signed with one of ``secrets`` (and fresh, if signed so)."""
        if not cls.receives_webhooks:
            raise Rejected(f"{cls.kind} connections receive no webhooks")
        if not secrets:
            raise Rejected("the connection has no webhook secret")
        cls.check_signature(inbound, secrets)

    @classmethod
    def check_signature(cls, inbound: Inbound, secrets: list[str]) -> None:
        raise Rejected(f"{cls.kind} connections receive no webhooks")

    @classmethod
    def webhook_events(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
        """What a verified delivery says changed, and what it holds that is not applied; or Malformed."""
        raise Malformed(f"{cls.kind} connections receive no webhooks")

    @classmethod
    def webhook_hints(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Any]:
        return cls.webhook_events(payload, options, headers).hints

    @classmethod
    def webhook_event_id(cls, headers: Headers, body: bytes, payload: Any = None) -> str:
        """The delivery's identity in the inbox: the vendor's event id where it has one, else the body's
        hash."""
        return body_hash(body)

    @classmethod
    def webhook_split(cls, headers: Headers, body: bytes, payload: Any) -> list[tuple[str, bytes]]:
        """The inbox rows of one verified delivery, ``(event id, body)`` each: one per delivery unless the
        vendor batches independent events (then one per event, so a redelivered event is a duplicate)."""
        return [(cls.webhook_event_id(headers, body, payload), body)]

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def fetch_records(
        self,
        client: HttpClient,
        stream: Stream,
        ids: Sequence[str],
        scopes: Mapping[str, str] | None = None,
    ) -> list[Record]:
        """The current raw documents with these ids (those gone upstream omitted); ``scopes`` maps an id
        to the ``Hint.scope`` its event gave. Kinds that cannot read by id raise NotImplementedError: the
        sweep then re-lists instead, and an id-only webhook fails permanently."""
        raise NotImplementedError(f"{self.kind} connections cannot fetch records by id")

    def after_webhook(self, delivery: WebhookDelivery) -> None:
        """Inside a processed delivery's transaction: work the delivery triggers (none by default)."""

    # ---- catching up after webhook downtime (kinds whose vendor offers a change feed) ----
    catches_up: ClassVar[bool] = False

    def catch_up_due(self, now: dt.datetime) -> dt.datetime | None:
        """Where a scheduled catch-up should start now (webhooks silent longer than the vendor retries
        them), or None when none is due."""
        return None

    def catch_up_window(self) -> dt.timedelta:
        """How long the vendor retries an undelivered webhook: silence longer than this may have lost one."""
        return dt.timedelta(days=1)

    def catch_up_start(self, now: dt.datetime) -> dt.datetime:
        """Where an operator's catch-up starts: the silence's start when webhooks are silent now, else one
        retry window back."""
        return self.catch_up_due(now) or now - self.catch_up_window()

    def catch_up(self, since: dt.datetime) -> dict[str, Any]:
        """Re-read what changed upstream since ``since`` and apply it (version-guarded); counts."""
        raise NotImplementedError(f"{self.kind} connections cannot catch up after webhook downtime")

    @property
    def streams(self) -> list[Stream]:
        return [cls(self) for cls in self.stream_classes]

    def stream(self, name: str) -> Stream:
        for stream in self.streams:
            if stream.name == name:
                return stream
        names = ", ".join(s.name for s in self.stream_classes)
        raise UnknownStream(f"{self.kind} has no stream {name!r} (streams: {names})")

    def option(self, name: str) -> Any:
        value = (self.connection.options or {}).get(name)
        if value in (None, ""):
            raise ConfigurationError(f"connection {self.connection.slug!r} needs options.{name}")
        return value

    def mapped(self, name: str) -> str:
        """The vendor field this connection reads for mapping ``name``: options.field_map or the default."""
        for mapping in self.field_mappings:
            if mapping.name == name:
                configured = ((self.connection.options or {}).get("field_map") or {}).get(name)
                return str(configured or mapping.default)
        raise KeyError(f"{self.kind} has no field mapping {name!r}")

    def auth_headers(self) -> dict[str, str]:
        credentials = self.connection.credentials
        if self.refreshable(credentials):
            from apps.connectors.oauth import expiring

            if expiring(credentials):
                self._refresh(rejected_token=None)
                credentials = self.connection.credentials
        token = credentials.get("access_token")
        if not token:
            raise ConfigurationError(f"connection {self.connection.slug!r} has no credentials.access_token")
        return {"Authorization": f"Bearer {token}"}

    def refreshable(self, credentials: Mapping[str, Any] | None = None) -> bool:
        """Whether this connection renews its access token itself (an OAuth kind holding a refresh token)."""
        credentials = self.connection.credentials if credentials is None else credentials
        return bool(self.token_url and credentials.get("refresh_token"))

    def _refresh(self, rejected_token: str | None) -> None:
        from apps.connectors.oauth import oauth_refresh

        oauth_refresh(
            connection=self.connection,
            token_url=str((self.connection.options or {}).get("token_url") or self.token_url),
            rejected_token=rejected_token,
            basic_auth=self.token_basic_auth,
        )

    def _reauthorize(self, rejected: Mapping[str, str]) -> dict[str, str]:
        self._refresh(rejected_token=rejected.get("Authorization", "").partition(" ")[2] or None)
        return self.auth_headers()

    def tenant(self) -> str:
        """Whose request budget calls of this connection spend: the vendor account behind the base URL."""
        return urlsplit(self.connection.base_url).netloc

    def rate_budget(self) -> Callable[[], float] | None:
        """The shared budget waited on before each call: options.rate_budget {calls, seconds}, or false."""
        from apps.connectors.ratelimit import RateBudget

        configured = (self.connection.options or {}).get("rate_budget", self.rate_budget_default)
        if not configured:
            return None
        if isinstance(configured, dict):
            try:
                calls, seconds = int(configured["calls"]), float(configured["seconds"])
            except (KeyError, TypeError, ValueError):
                raise ConfigurationError(
                    f"connection {self.connection.slug!r}: options.rate_budget needs calls and seconds"
                ) from None
        else:
            calls, seconds = configured
        lease = (self.connection.options or {}).get("rate_budget_lease", self.rate_budget_lease)
        try:
            lease = int(lease)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"connection {self.connection.slug!r}: options.rate_budget_lease must be a whole number"
            ) from None
        return RateBudget(f"{self.kind}:{self.tenant()}", calls, seconds, lease=lease)

    def http(self, headers: Mapping[str, str] | None = None) -> HttpClient:
        """An HTTP client with this connection's auth, shared rate budget and (OAuth kinds) token refresh."""
        return HttpClient(
            self.connection.base_url,
            headers={**self.auth_headers(), **(headers or {})},
            budget=self.rate_budget(),
            reauthorize=self._reauthorize if self.refreshable() else None,
        )

    def client(self) -> HttpClient:
        return self.http()

    def settle(self) -> dt.timedelta:
        """How far behind now incremental windows end (options.settle_seconds overrides, e.g. 0 for tests)."""
        value = (self.connection.options or {}).get("settle_seconds")
        return SETTLE if value is None else dt.timedelta(seconds=float(value))

    def write_note(
        self, target: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> dict[str, Any]:
        """Attach ``text`` to the upstream record ``target``; safe to call twice with the same key.

        ``retry`` says an earlier attempt may have reached the upstream (a timeout, a 5xx, a worker killed
        mid-call): a kind without idempotency keys looks for that note before writing another."""
        raise NotImplementedError(f"{self.kind} connections do not support notes yet")


# ---- cursors ---------------------------------------------------------------------------------------


def cursor_start(cursor: Cursor, full: bool) -> dt.datetime | None:
    """Where an incremental read begins: the saved timestamp minus the lookback; None reads everything."""
    if full or not cursor.get("updated_at"):
        return None
    return parse_datetime(cursor["updated_at"]) - LOOKBACK


def make_cursor(updated_at: dt.datetime, record_id: Any) -> Cursor:
    return {"updated_at": updated_at.astimezone(dt.UTC).isoformat(), "id": str(record_id)}


def cursor_key(cursor: Cursor) -> tuple[dt.datetime, str]:
    """Order cursors by (updated_at, id); an empty cursor sorts first."""
    if not cursor.get("updated_at"):
        return (dt.datetime.min.replace(tzinfo=dt.UTC), "")
    return (parse_datetime(cursor["updated_at"]), str(cursor.get("id", "")))


def keyset_pages(
    fetch: Callable[[dt.datetime | None, int], tuple[list[Record], bool]],
    *,
    updated_at: Callable[[Record], dt.datetime],
    record_id: Callable[[Record], Any],
    since: dt.datetime | None,
    page_size: int,
    cursor: Cursor,
    cursor_cap: dt.datetime | None = None,
    explode: Callable[[list[Record]], list[Record]] | None = None,
) -> Iterator[Page]:
    """Page an ascending-by-updated-time query so that no record is skipped by concurrent upstream edits.

    ``fetch(since, offset)`` returns one page of records with updated time >= ``since``, oldest first, after
    skipping ``offset`` of them, and whether the query holds more. Paging by offset over a live data set
    skips a record whenever an earlier one is edited meanwhile (it moves to the end and everything shifts
    left), so each page re-anchors at the last timestamp seen with offset 0 and re-reads the few records
    sharing it; the upsert dedupes them. Only when a whole page shares one timestamp does the offset grow,
    within that timestamp.

    The saved cursor never passes ``cursor_cap`` (the run's start less the settle time): a record still
    being committed upstream with an earlier timestamp is then read by the next run. ``explode`` turns a page
    of vendor documents into the stream's records (a bill into its job-charged lines).
    """
    offset = 0
    asked: set[tuple[dt.datetime | None, int]] = set()
    previous: list[Any] = []
    while True:
        asked.add((since, offset))
        records, more = fetch(since, offset)
        if records:
            last = records[-1]
            reached = make_cursor(updated_at(last), record_id(last))
            if cursor_cap is not None and updated_at(last) > cursor_cap:
                reached = make_cursor(cursor_cap, "")
            cursor = max(cursor, reached, key=cursor_key)
        yield Page(explode(records) if explode else records, cursor)
        if not more or not records:
            return
        last_ts = updated_at(records[-1])
        if updated_at(records[0]) != last_ts:
            next_since, next_offset = last_ts, 0
        else:
            # One timestamp fills the page: step through it by offset (or, for HubSpot, by id). By the page
            # size, not the records received: a vendor that repeats a record on a page must not shift us.
            next_offset = offset + page_size if since == last_ts else page_size
            next_since = last_ts
        ids = [record_id(r) for r in records]
        if (next_since, next_offset) in asked or ids == previous:
            # The upstream says "more" but would have us ask again what we asked (or answers the same page
            # to a new question): looping would read nothing new forever, and a run stopped at some point
            # would look successful.
            raise PagingStalled(
                f"a page ending at {last_ts.isoformat()} does not move past "
                f"{since.isoformat() if since else 'the start'} (offset {offset}) although the upstream says "
                "more records follow"
            )
        previous = ids
        since, offset = next_since, next_offset


class PagingStalled(UpstreamPermanent):
    """An upstream page that says more records follow but moves the walk nowhere: the run ends as an error
    (not a success that read nothing new), and the next run starts again from the saved cursor."""


# ---- field parsing shared by the kinds -------------------------------------------------------------


def _from_epoch_ms(value: Any) -> dt.datetime:
    """Epoch milliseconds; a value no calendar can hold (1e20, NaN, inf) is a bad record, not a crash."""
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise BadRecord(f"date-time out of range: {value!r}") from exc


def parse_datetime(value: Any) -> dt.datetime:
    """An aware datetime from ISO 8601 (``Z`` or offset) or epoch milliseconds; naive input is UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, bool):
        raise BadRecord(f"not a date-time: {value!r}")
    elif isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        moment = _from_epoch_ms(value)
    elif isinstance(value, str) and value:
        try:
            moment = dt.datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError as exc:
            raise BadRecord(f"not a date-time: {value!r}") from exc
    else:
        raise BadRecord(f"missing date-time: {value!r}")
    moment = moment if timezone.is_aware(moment) else moment.replace(tzinfo=dt.UTC)
    try:
        # Stored and hashed in UTC: an instant at the calendar's edge (0001-01-01T00:00+05:00) has no UTC.
        moment.astimezone(dt.UTC)
    except OverflowError as exc:
        raise BadRecord(f"date-time out of range: {value!r}") from exc
    return moment


def parse_date(value: Any) -> dt.date | None:
    """A date from ``YYYY-MM-DD`` or a date-time's date part; HubSpot may send epoch ms at midnight UTC."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise BadRecord(f"not a date: {value!r}")
    text = str(value)
    if text.isdigit() and len(text) > 8:
        return _from_epoch_ms(text).date()
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError as exc:
        raise BadRecord(f"not a date: {value!r}") from exc


# Far beyond any amount a business system holds (entity columns hold < 10**12), far below what
# Decimal's default 28-digit context can quantize: a larger value is refused here with its reason.
MONEY_LIMIT = Decimal(10) ** 15


def parse_money(value: Any, *, required: bool = True) -> Decimal | None:
    """Decimal with two places; QBO sends JSON numbers, Procore strings.

    Anything that is not a finite amount below ``MONEY_LIMIT`` (``1e30``, ``-1e26``, ``NaN``, ``Infinity``,
    ``true``, ``"12 USD"``) raises BadRecord naming the value, so its record is quarantined and the stream
    goes on; the entity column's own precision is checked by the loader (``validate_row``).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRecord("missing amount")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise BadRecord(f"not an amount: {value!r}")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except (InvalidOperation, ValueError) as exc:
        raise BadRecord(f"not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise BadRecord(f"not an amount: {value!r}")
    if abs(amount) >= MONEY_LIMIT:
        raise BadRecord(f"amount out of range: {value!r}")
    return amount.quantize(Decimal("0.01"))


def required(raw: Record, key: str) -> Any:
    value = raw.get(key)
    if value in (None, ""):
        raise BadRecord(f"missing {key}")
    return value


def domain_of(value: Any) -> str:
    """The lower-cased host of a URL, bare domain or email address, without ``www.``: a matching key."""
    text = str(value or "").strip().lower()
    if not text:
        return ""
    if "@" in text and "://" not in text:
        text = text.rsplit("@", 1)[1]
    host = urlsplit(text if "://" in text else f"//{text}").hostname or ""
    return host.removeprefix("www.")
