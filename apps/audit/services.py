"""Writing and verifying the audit chain.

Hashing is ``sha256(prev_hash + canonical_json(content))`` (``AuditEntry.compute_hash``). The write and
verify paths below produce exactly that canonical text without building model instances: the content
dict always has the same six keys, so its JSON is assembled around the separately serialised ``data``.
``data`` is stored as that very text (``JSONTextField``), so verification hashes it as read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import DataError, connection, transaction
from django.utils import timezone

from apps.bulk import stored_maker

from .models import AuditEntry

GENESIS = "0" * 64
# One chain means one writer at a time: a transaction-scoped advisory lock orders appends.
_CHAIN_LOCK = 0x46554C43  # "FULC"

Actor = AbstractBaseUser | AnonymousUser | str | None

# canonical_json's output, from the C encoder without the circular-reference bookkeeping (data that
# came from JSON cannot be circular; circular input to a write still fails, with a RecursionError).
# NaN and infinities are refused (ValueError) as jsonb refuses them: JSON lookups cast data to jsonb.
_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii
_c_encoder = json.encoder.c_make_encoder  # type: ignore[attr-defined]
if _c_encoder is not None:
    _encode = _c_encoder(None, str, _json_str, None, ":", ",", True, False, False)

    def _canonical(data: Any) -> str:
        return "".join(_encode(data, 0))

else:  # pragma: no cover - CPython always has the C accelerator
    _canonical = functools.partial(json.dumps, sort_keys=True, separators=(",", ":"), allow_nan=False)
_load_one: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# ^ one JSON value from offset 0; the text is known-good JSON

_SECRET_WORDS = ("secret", "token", "password", "credential")
# Escapes in ASCII JSON, one whole escape per match; group 1 is one that jsonb refuses: \u0000 or an
# unpaired surrogate (a pair is consumed by the first branch).
_ESCAPE = re.compile(
    r"\\(?:ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|(u0000|ud[89a-f][0-9a-f]{2})|.)", re.IGNORECASE
)


def _actor_fields(actor: Actor) -> tuple[str, int | None]:
    if actor is None:
        return "system", None
    if isinstance(actor, str):
        return actor if ":" in actor else f"system:{actor}", None
    if not actor.is_authenticated:
        return "anonymous", None
    return f"user:{actor.get_username()}", actor.pk


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether redaction replaces the value under this key: its lower case holds a secret word."""
    if not isinstance(key, str):
        raise TypeError(f"audit data keys must be strings, not {key!r}")
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _redact(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: ("[redacted]" if is_secret_key(k) else _redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact(v) for v in data]
    return data


class RawJSON(str):
    """JSON text that its caller already holds in canonical form (``canonical_json`` of its value: sorted
    keys, no whitespace, ASCII), for a top-level value of an entry's ``data``.

    It goes into the hashed text as is instead of being encoded again (a matched decision's facts: the
    decision row carries that very text). Redaction and the jsonb checks still read the whole entry's
    text, and a secret word anywhere in it sends the entry down the careful path, which decodes the
    text and redacts it like any other data. Passing text that is not canonical JSON breaks nothing in
    the chain (the hash covers what is stored) but ``export_audit``'s per-line check would fail on it.
    """

    __slots__ = ()


class CheckedJSON(RawJSON):
    """``RawJSON`` whose producer has checked every object key in it, as the string the key decodes to:
    none holds a secret word (``is_secret_key``), so redaction would leave the text as it is.

    When every key of an entry's data is known to be clean (its own keys, and those of the ``CheckedJSON``
    values in it), the writer skips its scan of the whole text for secret words, which is a third of the
    Python an entry of a matched decision costs (``Context.snapshot_json`` checks its fact names once per
    set of names). The jsonb checks still read the text.
    """

    __slots__ = ()


def _stored_data(data: Any, *, value: bool = True) -> tuple[str, Any]:
    """The canonical JSON of redacted ``data``, which is both hashed and stored, and (with ``value``) its
    value as read back (else None).

    A dict of plain values (str, int, bool, None) and ``RawJSON`` texts under str keys is written out
    directly: such values read back as given, so the text needs no reading back. Other data is dumped
    at once: with str keys only, ``canonical_json(json.loads(text)) == text``, so one dump and one load
    give both; when the value read back differs from the data (a non-str key, which the careful path
    refuses, or a value dumped with ``str`` such as a Decimal), the careful path runs.

    Redaction can only change something when a secret word occurs in the text (an escape could hide
    one); otherwise the text of the data as given is already the text of the redacted data. Nor can it
    when every key is known to be clean: the dict's own (checked once per set of keys) and those inside
    its ``CheckedJSON`` values (checked by their producer); then the text is not scanned. What jsonb
    would refuse (NaN, infinities, ``\\u0000``, unpaired surrogates) is refused here, so that JSON
    lookups, which cast the column to jsonb, work on every entry.
    """
    if type(data) is dict:
        spliced = _spliced(data)
        if spliced is not None:
            text, checked = spliced
            if checked or not _may_hide_secret(text.lower()):
                _refuse_for_jsonb(text)
                return text, (_load_one(text, 0)[0] if value else None)
        if any(isinstance(v, RawJSON) for v in data.values()):
            data = {k: json.loads(v) if isinstance(v, RawJSON) else v for k, v in data.items()}
    try:
        text = _canonical(data)
    except ValueError as exc:  # NaN or an infinity
        raise DataError(f"audit data: {exc}") from exc
    loaded = _load_one(text, 0)[0]
    if _may_hide_secret(text.lower()) or _differs(loaded, data):
        text = _canonical(_redact(data))
        loaded = _load_one(text, 0)[0]
    _refuse_for_jsonb(text)
    return text, (loaded if value else None)


def _spliced(data: dict[Any, Any], _enc: Callable[[str], str] = _json_str) -> tuple[str, bool] | None:
    """``canonical_json(data)`` written out from its keys and values, ``RawJSON`` values as given, and
    whether every key in it is known to be clean (no key of ``data`` holds a secret word and every
    ``RawJSON`` value is a ``CheckedJSON``); None when a key is not a str or a value is not a str, an int, a
    bool, None or RawJSON.

    One join over the layout's key prefixes and the values: no text is built per key (a key and its value
    concatenated copied the value, a matched decision's facts, 2.3 KB) and no second join for the commas."""
    names = tuple(data)
    layout = _LAYOUTS.get(names)
    if layout is None:
        if not all(type(name) is str for name in names):
            return None
        if not names:
            return "{}", True
        if len(_LAYOUTS) >= 256:
            _LAYOUTS.clear()
        ordered = sorted(names)
        layout = _LAYOUTS[names] = (
            tuple((name, ("{" if i == 0 else ",") + f"{_enc(name)}:") for i, name in enumerate(ordered)),
            not any(is_secret_key(name) for name in names),
        )
    heads, checked = layout
    parts: list[str] = []
    add = parts.append
    for name, head in heads:
        add(head)
        item = data[name]
        kind = type(item)
        if kind is str:
            add(_enc(item))
        elif kind is CheckedJSON:
            add(item)
        elif kind is RawJSON:
            add(item)
            checked = False
        elif kind is int:
            add(int.__repr__(item))
        elif item is None or item is True or item is False:
            add("null" if item is None else "true" if item else "false")
        elif isinstance(item, str):  # str subclasses (TextChoices) encode, and read back, as their text
            add(_enc(item))
        elif isinstance(item, int):  # the encoder writes int subclasses (IntEnum) with int's repr
            add(int.__repr__(item))
        else:
            return None
    add("}")
    return "".join(parts), checked


# The keys of a data dict, in its order -> each key and its JSON prefix ('{"key":' for the first in sorted
# order, ',"key":' for the others), in sorted order, and whether no key holds a secret word: the entries of
# one kind share their keys.
_LAYOUTS: dict[tuple[str, ...], tuple[tuple[tuple[str, str], ...], bool]] = {}


def _may_hide_secret(lowered: str) -> bool:
    """Whether redaction could change a text, given lower-cased: a secret word occurs in it (as a key or
    not), or an escape could spell one."""
    return (
        "secret" in lowered
        or "token" in lowered
        or "password" in lowered
        or "credential" in lowered  # the _SECRET_WORDS
        # One character is found by memchr: most texts have no escape at all, so the two-character
        # search and the pattern are skipped for them.
        or ("\\" in lowered and "\\u" in lowered and _HIDDEN_LETTER.search(lowered) is not None)
    )


def _refuse_for_jsonb(text: str) -> None:
    """Refuse ``text`` if it holds an escape that jsonb refuses (a RawJSON's escapes may be written in
    capitals: a surrogate's first hex digit is "d" or "D")."""
    if (
        "\\" in text  # memchr, as in _may_hide_secret: skips the searches below for most texts
        and ("\\u0000" in text or "\\ud" in text or "\\uD" in text)
        and any(m.group(1) for m in _ESCAPE.finditer(text))
    ):
        raise DataError("audit data: \\u0000 or an unpaired surrogate cannot be stored (jsonb refuses them)")


# An escape that lower-cases into ASCII letters, and so could spell a secret word in a key that the text
# does not show: an ASCII letter written escaped (not how the encoder writes one, but a RawJSON's text
# may), and the two characters outside ASCII whose lower case is an ASCII letter, the dotted capital I
# (U+0130) and the Kelvin sign (U+212A, "k"). The encoder escapes only non-ASCII and control characters,
# so text with ``≥`` or ``é`` in it (decision summaries, names) stays on the fast path. Matched in
# lower-cased text.
_HIDDEN_LETTER = re.compile(r"\\u(?:00(?:4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a])|0130|212a)")


def _differs(value: Any, data: Any) -> bool:
    try:
        return bool(value != data)
    except Exception:  # an odd __eq__ somewhere in the data (dumped with str): take the careful path
        return True


_COPY_SQL = (
    "COPY audit_auditentry "
    "(id, created_at, actor, actor_user_id, action, object_type, object_id, data, prev_hash, hash) "
    "FROM STDIN (FORMAT BINARY)"
)
# The sequence is looked up once per statement (a function in FROM): in the select list,
# pg_get_serial_sequence ran once per id, a catalog search costing the server ~3.5 µs per entry.
_NEXT_SQL = (
    "SELECT (SELECT hash FROM audit_auditentry ORDER BY id DESC LIMIT 1), "
    "ARRAY(SELECT nextval(seq) "
    "FROM CAST(pg_get_serial_sequence('audit_auditentry', 'id') AS regclass) AS seq, generate_series(1, %s))"
)


@transaction.atomic
def audit_record(
    *,
    action: str,
    actor: Actor = None,
    object_type: str = "",
    object_id: Any = "",
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry to the chain, in the caller's transaction."""
    item = {"action": action, "object_type": object_type, "object_id": object_id, "data": data or {}}
    return _append([item], actor)[0]


@transaction.atomic
def audit_record_many(items: Iterable[dict[str, Any]], *, actor: Actor = None) -> list[AuditEntry]:
    """Append several entries at once (batch evaluation, bulk links) with one lock and one COPY."""
    return _append(list(items), actor)


@transaction.atomic
def audit_append_many(items: Iterable[dict[str, Any]], *, actor: Actor = None) -> None:
    """``audit_record_many`` for callers that do not use the entries: none are built (nor their data read
    back from its JSON), the same rows and hashes are written."""
    _append(list(items), actor, entries=False)


def _append(items: list[dict[str, Any]], actor: Actor, *, entries: bool = True) -> list[AuditEntry]:
    if not items:
        return []
    actor_name, actor_id = _actor_fields(actor)
    actor_json = _json_str(actor_name)
    alias = connection.alias
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK])
        # A statement after the lock is granted sees every append committed before it; ids drawn
        # under the lock keep id order equal to chain order.
        cursor.execute(_NEXT_SQL, [len(items)])
        last, ids = cursor.fetchone()
        ids.sort()
        prev = last or GENESIS
        now = timezone.now()
        now_json = _json_str(now.isoformat())
        built: list[AuditEntry] = []
        loaded = stored_maker(AuditEntry, alias) if entries else None
        sha256 = hashlib.sha256
        # Binary COPY: the server takes each field by its length instead of scanning ~900 bytes for tabs
        # and escapes (about 1.5 µs of its CPU per entry), and psycopg's C code writes the rows (cheaper
        # than escaping and formatting a text line here). psycopg sends the rows in ~32 KB pieces, so the
        # server inserts and indexes them while the next ones are prepared (a failure inside the block
        # aborts the COPY; atomic() rolls back).
        with connection.wrap_database_errors, cursor.cursor.copy(_COPY_SQL) as copy:
            copy.set_types(_COPY_TYPES)
            write_row = copy.write_row
            for pk, item in zip(ids, items, strict=True):
                text, value = _stored_data(item.get("data") or {}, value=entries)
                action, object_type = str(item["action"]), str(item.get("object_type", ""))
                object_id = str(item.get("object_id", ""))
                content = (
                    f'{{"action":{_json_str(action)},"actor":{actor_json},"created_at":{now_json},'
                    f'"data":{text},"object_id":{_json_str(object_id)},"object_type":{_json_str(object_type)}}}'
                )  # canonical_json(entry.content()): the six keys in sorted order
                digest = sha256((prev + content).encode()).hexdigest()
                write_row((pk, now, actor_name, actor_id, action, object_type, object_id, text, prev, digest))
                if loaded is not None:
                    built.append(
                        loaded(
                            id=pk,
                            created_at=now,
                            actor=actor_name,
                            actor_user_id=actor_id,
                            action=action,
                            object_type=object_type,
                            object_id=object_id,
                            data=value,
                            prev_hash=prev,
                            hash=digest,
                        )
                    )
                prev = digest
    return built


_COPY_TYPES = ("int8", "timestamptz", "text", "int4", "text", "text", "text", "text", "text", "text")


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str = ""
    # "chain" when an entry fails its own or its predecessor's hash; "anchor" when the chain is
    # consistent but disagrees with an anchor kept outside the table (rewritten or truncated).
    source: str = "chain"
    anchors_checked: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A (last_id, last_hash, count) seen at some moment, e.g. an anchor; ``label`` names it in reports."""

    last_id: int
    last_hash: str
    count: int
    label: str


def audit_verify(*, batch_size: int = 5000) -> ChainReport:
    """Walk the chain in id order, recomputing every hash."""
    return verify_chain(batch_size=batch_size)


# created_at as datetime.isoformat() prints it in UTC (the ".000000" is cut in Python): PostgreSQL
# formats it faster than psycopg parses a timestamptz.
_SELECT_SQL = (
    "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), actor, action, "
    "object_type, object_id, data, prev_hash, hash "
    "FROM audit_auditentry WHERE id > %s ORDER BY id LIMIT %s"
)


def verify_chain(*, checkpoints: Sequence[Checkpoint] = (), batch_size: int = 5000) -> ChainReport:
    """Walk the chain in id order, recomputing every hash, and hold it to ``checkpoints``.

    Each checkpoint's entry must still exist with the recorded hash and position; the chain must not
    end before the last of them. The first problem in id order is reported.

    Rows are read in keyset batches on the caller's connection (so inside a transaction too); the
    next batch is fetched by a helper thread while this one is hashed, which keeps the database
    server busy at the same time as Python.
    """
    points = sorted(checkpoints, key=lambda c: (c.last_id, c.count))
    next_point = 0
    next_id = points[0].last_id if points else None
    prev = GENESIS
    checked = 0
    last_id = 0
    enc, sha256 = _json_str, hashlib.sha256
    with connection.cursor() as cursor, ThreadPoolExecutor(1, thread_name_prefix="audit-verify") as pool:
        raw = cursor.cursor

        def fetch(after: int) -> list[tuple[Any, ...]]:
            raw.execute(_SELECT_SQL, [after, batch_size])
            return raw.fetchall()

        pending = pool.submit(fetch, 0)
        while True:
            with connection.wrap_database_errors:
                rows = pending.result()
            if not rows:
                break
            pending = pool.submit(fetch, rows[-1][0])
            for pk, created_at, actor, action, object_type, object_id, data, prev_hash, digest in rows:
                if prev_hash != prev:
                    return ChainReport(False, checked, pk, "previous hash does not match the entry before it")
                if created_at.endswith(".000000"):
                    created_at = created_at[:-7]
                content = (
                    f'{{"action":{enc(action)},"actor":{enc(actor)},"created_at":"{created_at}+00:00",'
                    f'"data":{data},"object_id":{enc(object_id)},'
                    f'"object_type":{enc(object_type)}}}'
                )
                if sha256((prev + content).encode()).hexdigest() != digest:
                    return ChainReport(False, checked, pk, "content does not match its hash")
                prev = digest
                checked += 1
                last_id = pk
                if next_id is not None and pk >= next_id:
                    problem = _check_points(points, next_point, pk, digest, checked)
                    if problem is not None:
                        return ChainReport(False, checked, problem[0], problem[1], "anchor", next_point)
                    while next_point < len(points) and points[next_point].last_id <= pk:
                        next_point += 1
                    next_id = points[next_point].last_id if next_point < len(points) else None
    if next_point < len(points) or (points and checked < max(p.count for p in points)):
        point = max(points, key=lambda p: p.count)
        end = f"#{last_id} with {checked} entries" if checked else "empty"
        reason = (
            f"tail deleted after #{last_id}: {point.label} recorded entry #{point.last_id} as number "
            f"{point.count} of the chain, which now ends at {end}"
        )
        return ChainReport(False, checked, point.last_id, reason, "anchor", next_point)
    return ChainReport(ok=True, checked=checked, anchors_checked=len(points))


def _check_points(
    points: Sequence[Checkpoint], start: int, pk: int, digest: str, position: int
) -> tuple[int, str] | None:
    """Hold the entry just verified (``pk``, ``digest``, number ``position``) to the checkpoints up to it."""
    for point in points[start:]:
        if point.last_id > pk:
            break
        if point.last_id < pk:
            return point.last_id, (
                f"anchored entry #{point.last_id} was deleted: {point.label} recorded it, "
                f"the chain goes on at #{pk}"
            )
        if point.last_hash != digest:
            return pk, (
                f"anchored entry #{pk} was rewritten: {point.label} recorded hash {point.last_hash[:16]}…, "
                f"the table holds {digest[:16]}…"
            )
        if point.count != position:
            return pk, (
                f"anchored entry #{pk} moved: {point.label} recorded it as number {point.count} "
                f"of the chain, it is now number {position}"
            )
    return None
