"""Generic REST: any in-house system whose streams, pagination and field mapping live in the options."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from django.db import models

from apps.connectors.http import HttpClient, UpstreamError, UpstreamPermanent
from apps.connectors.kinds.base import (
    BadRecord,
    ConfigurationError,
    ConnectorKind,
    Cursor,
    Page,
    Record,
    Stream,
    cursor_key,
    cursor_start,
    keyset_pages,
    make_cursor,
    parse_date,
    parse_datetime,
    parse_money,
)
from apps.connectors.webhooks.schemes import Events, Headers, Inbound, body_hash, verify_standard

from . import webhooks
from .options import StreamConfig, dig, parse_options


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _next_link(link_header: str | None) -> str | None:
    for part in (link_header or "").split(","):
        url, _, rel = part.partition(";")
        if 'rel="next"' in rel.replace(" ", "") or "rel=next" in rel.replace(" ", ""):
            return url.strip().strip("<>")
    return None


def convert_value(field: models.Field[Any, Any], value: Any) -> Any:
    """An upstream JSON value as the entity field's Python type; BadRecord names what is wrong."""
    if value in (None, ""):
        if isinstance(field, models.CharField | models.TextField):
            return "" if not field.null else None
        return None if field.null else field.get_default()
    if isinstance(field, models.DecimalField):
        return parse_money(value)
    if isinstance(field, models.DateTimeField):
        return parse_datetime(value)
    if isinstance(field, models.DateField):
        return parse_date(value)
    if isinstance(field, models.BooleanField):
        return value is True or str(value).strip().lower() in ("true", "1", "yes")
    if isinstance(field, models.FloatField):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BadRecord(f"{field.name} is not a number: {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise BadRecord(f"{field.name} is not a finite number: {value!r}")
        return number
    if isinstance(field, models.IntegerField):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadRecord(f"{field.name} is not a whole number: {value!r}") from None
    if isinstance(field, models.CharField | models.TextField):
        return str(value).strip()
    if isinstance(value, Decimal):
        return value
    return value


@contextmanager
def _naming(record_id: Any, path: str, name: str) -> Iterator[None]:
    """A value that cannot be read becomes a BadRecord naming the record, the upstream field and the entity
    field it fills (an in-house system's operator finds the record and the field from the reason alone)."""
    try:
        yield
    except BadRecord as exc:
        raise BadRecord(f"record {record_id}: field {path!r} ({name}): {exc.reason}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # int(inf), a list where a number belongs, ...
        raise BadRecord(f"record {record_id}: field {path!r} ({name}): {type(exc).__name__}: {exc}") from None


class RestStream(Stream):
    """One configured stream; its name, model and entity come from the options, not the class."""

    kind: Rest

    def __init__(self, kind: Rest, config: StreamConfig) -> None:
        super().__init__(kind)
        self.config = config
        self.name = config.name  # type: ignore[misc]
        self.model = config.model  # type: ignore[misc]
        self.entity = config.entity  # type: ignore[misc]
        fields = {f.name: f for f in config.model._meta.concrete_fields}
        self._targets = [(name, path, fields[name]) for name, path in config.fields.items()]

    # ---- reading -----------------------------------------------------------------------------------

    def _records(self, body: Any, url: str) -> list[Record]:
        records = dig(body, self.config.records_path) if self.config.records_path else body
        if not isinstance(records, list):
            where = f"at {self.config.records_path!r}" if self.config.records_path else "as the body"
            raise UpstreamPermanent(f"GET {url}: expected a list of records {where}", status=200)
        return records

    def _params(self, since: dt.datetime | None) -> dict[str, Any]:
        params: dict[str, Any] = {self.config.pagination.size_param: self.config.pagination.page_size}
        if since is not None and self.config.updated_since_param:
            params[self.config.updated_since_param] = _iso(since)
        return params

    def _updated(self, raw: Record) -> dt.datetime:
        return parse_datetime(dig(raw, self.config.updated_at_path))

    def _id(self, raw: Record) -> Any:
        return dig(raw, self.config.id_path)

    def record_id(self, raw: Record) -> str:
        """The record's upstream id as text (webhook processing matches fetched records to events by it)."""
        value = self._id(raw)
        return "" if value is None else str(value)

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        started = dt.datetime.now(dt.UTC)
        cap = started - self.kind.settle()
        since = cursor_start(cursor, full) if self.config.updated_since_param else None
        style = self.config.pagination.style
        if style in ("page", "offset") and self.config.updated_since_param:
            yield from keyset_pages(
                lambda s, offset: self._fetch_numbered(client, s, offset),
                updated_at=self._updated,
                record_id=self._id,
                since=since,
                page_size=self.config.pagination.page_size,
                cursor=cursor,
                cursor_cap=cap,
            )
            return
        if style in ("page", "offset"):
            offset = 0
            while True:
                records, more = self._fetch_numbered(client, None, offset)
                cursor = self._advance(cursor, records, cap)
                yield Page(records, cursor)
                if not more or not records:
                    return
                offset += self.config.pagination.page_size
        yield from self._follow(client, since, cursor, cap)

    def _advance(self, cursor: Cursor, records: list[Record], cap: dt.datetime) -> Cursor:
        """The saved cursor after a page: its newest record, never past the settle cap."""
        if not records:
            return cursor
        newest = max(records, key=self._updated)
        updated = self._updated(newest)
        reached = make_cursor(cap, "") if updated > cap else make_cursor(updated, self._id(newest))
        return max(cursor, reached, key=cursor_key)

    def _fetch_numbered(
        self, client: HttpClient, since: dt.datetime | None, offset: int
    ) -> tuple[list[Record], bool]:
        pagination = self.config.pagination
        params = self._params(since)
        if pagination.style == "offset":
            params[pagination.offset_param] = offset
        else:
            params[pagination.page_param] = offset // pagination.page_size + 1
        body, _ = client.request_json("GET", self.config.path, params=params)
        records = self._records(body, self.config.path)
        return records, len(records) >= pagination.page_size

    def _follow(
        self, client: HttpClient, since: dt.datetime | None, cursor: Cursor, cap: dt.datetime
    ) -> Iterator[Page]:
        """Cursor and Link pagination: follow the token or URL the upstream hands back."""
        pagination = self.config.pagination
        path: str = self.config.path
        params: dict[str, Any] | None = self._params(since)
        while True:
            body, response = client.request_json("GET", path, params=params)
            records = self._records(body, path)
            cursor = self._advance(cursor, records, cap)
            yield Page(records, cursor)
            if pagination.style == "link":
                following = _next_link(response.headers.get("Link"))
                if not following or not records:
                    return
                following = client.url(following)
                if urlsplit(following).netloc != urlsplit(client.base_url).netloc:
                    # The session carries the bearer token: never send it where the upstream points us.
                    raise UpstreamPermanent(
                        f"GET {path}: Link rel=next leads to another host ({urlsplit(following).netloc})",
                        status=200,
                    )
                path, params = following, None
            else:
                token = dig(body, pagination.next_cursor_path)
                if token in (None, "") or not records:
                    return
                params = {**self._params(since), pagination.cursor_param: token}

    # ---- shaping -----------------------------------------------------------------------------------

    def normalise(self, raw: Record) -> Record:
        record_id = self._id(raw)
        if record_id in (None, ""):
            raise BadRecord(f"record without {self.config.id_path}")
        row: Record = {"external_id": str(record_id)}
        with _naming(record_id, self.config.updated_at_path, "source_updated_at"):
            row["source_updated_at"] = self._updated(raw)
        for name, path, field in self._targets:
            with _naming(record_id, path, name):
                row[name] = convert_value(field, dig(raw, path))
        return row


class Rest(ConnectorKind):
    kind = "rest"
    label = "Generic REST"
    stream_classes: ClassVar[list[type[Stream]]] = []
    receives_webhooks = True  # Standard Webhooks

    @classmethod
    def check_signature(cls, inbound: Inbound, secrets: list[str]) -> None:
        verify_standard(inbound, secrets)

    @classmethod
    def webhook_events(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
        return webhooks.events(payload, options, headers)

    @classmethod
    def webhook_event_id(cls, headers: Headers, body: bytes, payload: Any = None) -> str:
        return webhooks.event_id(headers) or body_hash(body)

    @property
    def streams(self) -> list[Stream]:
        return [RestStream(self, config) for config in parse_options(self.connection.options)]

    def tenant(self) -> str:
        return urlsplit(self.connection.base_url).netloc

    def fetch_records(
        self,
        client: HttpClient,
        stream: Stream,
        ids: Sequence[str],
        scopes: Mapping[str, str] | None = None,
    ) -> list[Record]:
        """The current records with these ids, one ``detail_path`` read each; ones gone (404, 410) omitted.

        For id-only webhooks: the id comes from a signed event but is still quoted as one path segment, so
        no event can steer the read (and the bearer token) to another path or host.
        """
        assert isinstance(stream, RestStream)
        config = stream.config
        if not config.detail_path:
            raise ConfigurationError(
                f"stream {config.name!r} has no detail_path: id-only webhook events cannot be fetched"
            )
        found: list[Record] = []
        for record_id in ids:
            if record_id in ("", ".", ".."):
                continue
            path = config.detail_path.replace("{id}", quote(record_id, safe=""))
            try:
                body, _ = client.request_json("GET", path)
            except UpstreamError as exc:
                if exc.status in (404, 410):
                    continue
                raise
            record = dig(body, config.detail_record_path) if config.detail_record_path else body
            if not isinstance(record, dict):
                raise UpstreamPermanent(f"GET {path}: expected a record (a JSON object)", status=200)
            found.append(record)
        return found

    def stream(self, name: str) -> Stream:
        streams = self.streams
        for stream in streams:
            if stream.name == name:
                return stream
        from apps.connectors.kinds.base import UnknownStream

        raise UnknownStream(
            f"rest connection has no stream {name!r} (streams: {', '.join(s.name for s in streams)})"
        )
