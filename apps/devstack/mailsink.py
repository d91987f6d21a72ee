"""A local SMTP sink and mail viewer for the demo: every message is kept, none is delivered.

SMTP (aiosmtpd) stores each message as ``<n>.eml`` in the folder and appends a line of metadata to
``index.jsonl``; a small stdlib HTTP server shows them:

- ``/``               the messages, newest first (time, from, to, subject)
- ``/message/<n>``    one message: its headers, its text part, and its HTML part in a sandboxed iframe
- ``/message/<n>.eml`` the raw message
- ``/messages.json``  the list as JSON, newest first (what tests and scripts read)

Message HTML is untrusted: it is only ever shown through ``<iframe sandbox="" srcdoc="...">`` (no scripts,
no same-origin access, no forms), and every page is sent with a CSP that forbids scripts anyway.

    python -m apps.devstack.mailsink --smtp-port 1025 --http-port 8025 --folder .data/mail
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import json
import re
import signal
import sys
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

INDEX = "index.jsonl"
# No script may run on the viewer's pages; srcdoc iframes inherit this policy too.
CSP = (
    "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "img-src 'self' data:"
)


@dataclass(frozen=True)
class StoredMessage:
    """The index line for one message."""

    n: int
    received_at: str
    mail_from: str
    rcpt_tos: list[str]
    sender: str
    to: str
    subject: str
    size: int
    file: str


def _header(message: EmailMessage, name: str) -> str:
    try:
        return str(message.get(name, "") or "")
    except (ValueError, TypeError, IndexError, AttributeError):  # malformed: show it raw, keep the message
        return next((str(value) for key, value in message.raw_items() if key.lower() == name.lower()), "")


class MailStore:
    """The folder of ``.eml`` files and its index; safe to use from the SMTP and HTTP threads at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._messages: list[StoredMessage] = []
        index = self.folder / INDEX
        if index.exists():
            for line in index.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    self._messages.append(StoredMessage(**json.loads(line)))

    def add(self, raw: bytes, *, mail_from: str, rcpt_tos: list[str]) -> StoredMessage:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            n = (self._messages[-1].n if self._messages else 0) + 1
            name = f"{n}.eml"
            (self.folder / name).write_bytes(raw)
            stored = StoredMessage(
                n=n,
                received_at=datetime.now(UTC).isoformat(timespec="seconds"),
                mail_from=mail_from,
                rcpt_tos=list(rcpt_tos),
                sender=_header(parsed, "From"),
                to=_header(parsed, "To"),
                subject=_header(parsed, "Subject"),
                size=len(raw),
                file=name,
            )
            with (self.folder / INDEX).open("a", encoding="utf-8") as index:
                index.write(json.dumps(asdict(stored)) + "\n")
            self._messages.append(stored)
        return stored

    def all(self) -> list[StoredMessage]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._messages))

    def get(self, n: int) -> tuple[StoredMessage, bytes] | None:
        with self._lock:
            found = next((m for m in self._messages if m.n == n), None)
        if found is None:
            return None
        return found, (self.folder / found.file).read_bytes()


class Pipelining:
    """An aiosmtpd handler mixin announcing ``PIPELINING`` (RFC 2920) in the EHLO reply, as production mail
    servers do (aiosmtpd reads pipelined commands in order, but does not say so)."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler that answers EHLO
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class _Handler(Pipelining):
    """aiosmtpd handler: store the message, answer 250."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        stored = self.store.add(
            raw, mail_from=str(envelope.mail_from or ""), rcpt_tos=list(envelope.rcpt_tos)
        )
        return f"250 OK stored as message {stored.n}"


# --- the viewer -----------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Fulcrum mail sink</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #1b1f24; }}
header {{ background: #14213d; color: #fff; padding: .75rem 1.5rem; }} header a {{ color: #fff; }}
main {{ padding: 1.5rem; max-width: 70rem; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ text-align: left; padding: .4rem .6rem;
border-bottom: 1px solid #d0d7de; vertical-align: top; }}
pre {{ white-space: pre-wrap; background: #f6f8fa; padding: 1rem; border: 1px solid #d0d7de; }}
iframe {{ width: 100%; min-height: 32rem; border: 1px solid #d0d7de; }}
dt {{ font-weight: 600; }} dd {{ margin: 0 0 .5rem; }}
</style></head>
<body><header><a href="/">Fulcrum mail sink</a></header><main>{body}</main></body></html>
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_index(messages: list[StoredMessage]) -> str:
    if not messages:
        body = "<h1>Mail</h1><p>No messages yet. Send mail to the SMTP port and reload.</p>"
        return PAGE.format(title="Mail", body=body)
    rows = "".join(
        f'<tr><td><time datetime="{_e(m.received_at)}">{_e(m.received_at)}</time></td>'
        f"<td>{_e(m.sender or m.mail_from)}</td><td>{_e(m.to or ', '.join(m.rcpt_tos))}</td>"
        f'<td><a href="/message/{m.n}">{_e(m.subject or "(no subject)")}</a></td></tr>'
        for m in messages
    )
    body = (
        f"<h1>Mail ({len(messages)})</h1><table><thead><tr><th>Received</th><th>From</th><th>To</th>"
        f"<th>Subject</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return PAGE.format(title="Mail", body=body)


def _part(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        return str(part.get_content())
    except (LookupError, ValueError):  # unknown charset: show what can be shown
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)


def render_message(stored: StoredMessage, raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text, html_part = _part(message, "plain"), _part(message, "html")
    headers = "".join(
        f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>"
        for name, value in (
            ("From", stored.sender or stored.mail_from),
            ("To", stored.to or ", ".join(stored.rcpt_tos)),
            ("Envelope", f"{stored.mail_from} → {', '.join(stored.rcpt_tos)}"),
            ("Subject", stored.subject),
            ("Received", stored.received_at),
        )
    )
    sections = [f"<h1>{_e(stored.subject or '(no subject)')}</h1><dl>{headers}</dl>"]
    sections.append(f'<p><a href="/message/{stored.n}.eml">Raw message</a> · <a href="/">All mail</a></p>')
    if text is not None:
        sections.append(f"<h2>Text</h2><pre>{_e(text)}</pre>")
    if html_part is not None:
        # sandbox="" gives the message an opaque origin with scripts, forms and popups disabled.
        sections.append(
            f'<h2>HTML</h2><iframe sandbox="" referrerpolicy="no-referrer" title="HTML part of the message" '
            f'srcdoc="{_e(html_part)}"></iframe>'
        )
    if text is None and html_part is None:
        sections.append("<p>This message has no text or HTML part.</p>")
    return PAGE.format(title=_e(stored.subject or "Message"), body="".join(sections))


def _make_handler(store: MailStore) -> type[BaseHTTPRequestHandler]:
    class ViewerHandler(BaseHTTPRequestHandler):
        server_version = "FulcrumMailSink"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", render_index(store.all()).encode())
            elif path == "/messages.json":
                payload = json.dumps([asdict(m) for m in store.all()], indent=1).encode()
                self._send(HTTPStatus.OK, "application/json", payload)
            elif match := re.fullmatch(r"/message/(\d+)(\.eml)?", path):
                found = store.get(int(match.group(1)))
                if found is None:
                    self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"no such message\n")
                elif match.group(2):
                    self._send(HTTPStatus.OK, "message/rfc822", found[1])
                else:
                    self._send(HTTPStatus.OK, "text/html; charset=utf-8", render_message(*found).encode())
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the viewer is polled; access logs would drown the demo's output

    return ViewerHandler


class MailSink:
    """SMTP on ``smtp_port`` and the viewer on ``http_port``, both on ``host``; ``start()`` / ``stop()``."""

    def __init__(self, host: str, smtp_port: int, http_port: int, folder: str | Path) -> None:
        self.host, self.smtp_port, self.http_port = host, smtp_port, http_port
        self.store = MailStore(Path(folder))
        self._smtp = Controller(_Handler(self.store), hostname=host, port=smtp_port, enable_SMTPUTF8=True)
        self._http = ThreadingHTTPServer((host, http_port), _make_handler(self.store))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="mailsink-http", daemon=True
        )

    @property
    def smtp_url(self) -> str:
        return f"smtp://{self.host}:{self.smtp_port}"

    @property
    def viewer_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/"

    def start(self) -> MailSink:
        self._smtp.start()
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._smtp.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local SMTP sink with a web viewer, for the demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    parser.add_argument("--folder", default=".data/mail")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        sink = MailSink(args.host, args.smtp_port, args.http_port, args.folder).start()
    except OSError as exc:
        print(f"mail sink: cannot listen: {exc}", file=sys.stderr)
        return 1
    print(f"mail sink: {sink.smtp_url}  viewer: {sink.viewer_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
