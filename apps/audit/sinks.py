"""Where anchors go: a file, an S3-compatible bucket with object lock, or syslog.

``AUDIT_ANCHOR_SINK`` picks one (``FULCRUM_AUDIT_ANCHOR_FILE`` when it is unset):

- a path, or ``file:///var/lib/fulcrum/audit-anchor.log``: one signed JSON line per anchor, appended and
  fsynced. Simple, but whoever owns the machine can delete the file (``verify_audit`` then fails).
- ``s3://BUCKET/PREFIX?endpoint_url=https://...&region=...&retain_days=365&mode=COMPLIANCE``: one object
  per anchor, written with S3 Object Lock (``ObjectLockMode`` / ``ObjectLockRetainUntilDate`` on
  PutObject; the bucket must be created with object lock enabled), so not even the bucket's owner can
  delete or overwrite it before the retention date. Credentials come from boto3's usual chain
  (``AWS_ACCESS_KEY_ID``...). Needs ``boto3`` (``pip install 'fulcrum[s3]'``).
  AWS: https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html (x-amz-object-lock-mode,
  x-amz-object-lock-retain-until-date) and https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html
- ``syslog://HOST:PORT`` (UDP) or ``syslog:///dev/log``: one line ``fulcrum-audit-anchor {json}`` at
  facility ``local0`` (``?facility=local3`` to change), for shipping to a log store you do not administer.
  Syslog cannot be read back: verify with ``verify_audit --anchor FILE`` over the lines exported from it.

Whatever the sink, each anchor is HMAC-signed (``anchor.py``); a sink only stores and returns lines.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit


class AnchorUnavailable(Exception):
    """The sink's anchors cannot be read (missing, unreadable, or a write-only sink)."""


class AnchorSink(Protocol):
    description: str

    def write(self, line: str, *, name: str) -> None: ...

    def read_lines(self) -> list[tuple[str, str]]:
        """Every stored line with a label saying where it came from (``file, line 3``, an object key)."""
        ...


class FileSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = str(self.path)

    def write(self, line: str, *, name: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        # One write() of one short line to a file opened for appending: concurrent writers do not interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)

    def read_lines(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            raise AnchorUnavailable(f"no anchor file at {self.path}")
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AnchorUnavailable(f"anchor file {self.path} cannot be read: {exc}") from exc
        return [(line, f"{self.path.name}, line {n}") for n, line in enumerate(text.splitlines(), 1)]


class S3Sink:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = query.get("endpoint_url")
        self.region = query.get("region")
        self.retain_days = int(query.get("retain_days", "3650"))
        self.mode = query.get("mode", "COMPLIANCE").upper()
        if not self.bucket or self.mode not in ("COMPLIANCE", "GOVERNANCE"):
            raise ValueError(f"AUDIT_ANCHOR_SINK: not a valid s3:// sink: {url}")
        self.description = f"s3://{self.bucket}/{self.prefix}"

    def _client(self) -> Any:
        try:
            import boto3
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise AnchorUnavailable("the s3 anchor sink needs boto3: pip install 'fulcrum[s3]'") from exc
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)

    def write(self, line: str, *, name: str) -> None:
        until = dt.datetime.now(tz=dt.UTC) + dt.timedelta(days=self.retain_days)
        self._client().put_object(
            Bucket=self.bucket,
            Key=f"{self.prefix}/{name}.json" if self.prefix else f"{name}.json",
            Body=line.encode(),
            ContentType="application/json",
            ObjectLockMode=self.mode,
            ObjectLockRetainUntilDate=until,
        )

    def read_lines(self) -> list[tuple[str, str]]:
        client = self._client()
        lines = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            for page in pages:
                for item in page.get("Contents", []):
                    body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                    lines.append((body.decode("utf-8").strip(), item["Key"]))
        except AnchorUnavailable:
            raise
        except Exception as exc:
            raise AnchorUnavailable(f"anchors in {self.description} cannot be read: {exc}") from exc
        if not lines:
            raise AnchorUnavailable(f"no anchors in {self.description}")
        return lines


class SyslogSink:
    TAG = "fulcrum-audit-anchor"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.address: str | tuple[str, int] = (
            (parts.hostname, parts.port or 514) if parts.hostname else (parts.path or "/dev/log")
        )
        self.facility = logging.handlers.SysLogHandler.facility_names[query.get("facility", "local0")]
        self.description = url

    def write(self, line: str, *, name: str) -> None:
        handler = logging.handlers.SysLogHandler(address=self.address, facility=self.facility)
        try:
            record = logging.LogRecord(self.TAG, logging.INFO, __file__, 0, f"{self.TAG} {line}", None, None)
            handler.emit(record)
        finally:
            handler.close()

    def read_lines(self) -> list[tuple[str, str]]:
        raise AnchorUnavailable(
            f"anchors go to syslog ({self.description}), which cannot be read back: pass "
            "--anchor FILE with the lines exported from your log store, or --no-anchor"
        )


def sink_from_setting(value: str) -> AnchorSink:
    if value.startswith("s3://"):
        return S3Sink(value)
    if value.startswith("syslog://"):
        return SyslogSink(value)
    if value.startswith("file://"):
        return FileSink(urlsplit(value).path)
    return FileSink(value)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
