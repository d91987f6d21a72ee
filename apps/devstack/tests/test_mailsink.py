"""The demo's mail sink, over real sockets: SMTP in, the viewer's JSON and pages out."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from apps.devstack.mailsink import MailSink
from config.embedded_servers import free_port

HOST = "127.0.0.1"


def get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test server
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def send(
    port: int, *, subject: str, text: str, html: str | None = None, to: str = "maria@example.test"
) -> None:
    message = EmailMessage()
    message["From"] = "Fulcrum <fulcrum@localhost>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.send_message(message)


@pytest.fixture
def sink(tmp_path):
    with MailSink(HOST, free_port(), free_port(), tmp_path / "mail") as running:
        yield running


def test_sent_mail_is_stored_and_listed_newest_first(sink):
    send(sink.smtp_port, subject="First", text="one")
    send(
        sink.smtp_port,
        subject="Escalation #7: CO needs a decision",
        text="Acknowledge: http://x/7",
        to="a@b.test",
    )
    status, headers, body = get(sink.viewer_url + "messages.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    listed = json.loads(body)
    assert [m["subject"] for m in listed] == ["Escalation #7: CO needs a decision", "First"]
    newest = listed[0]
    assert (
        newest["n"] == 2 and newest["rcpt_tos"] == ["a@b.test"] and newest["mail_from"] == "fulcrum@localhost"
    )
    assert newest["sender"] == "Fulcrum <fulcrum@localhost>" and newest["received_at"]
    folder = Path(sink.store.folder)
    assert (folder / "2.eml").read_bytes().count(b"Acknowledge: http://x/7") == 1
    assert len((folder / "index.jsonl").read_text().splitlines()) == 2

    status, _, page = get(sink.viewer_url)
    assert status == 200
    assert page.index("Escalation #7") < page.index("First")
    assert 'href="/message/2"' in page


def test_message_page_shows_text_and_sandboxes_html(sink):
    send(
        sink.smtp_port,
        subject="<script>alert('subject')</script>",
        text="Plain <b>text</b> part",
        html='<p>Hello</p><script>alert("html")</script><img src=x onerror="alert(2)">',
    )
    status, headers, page = get(sink.viewer_url + "message/1")
    assert status == 200
    assert "script-src 'none'" in headers["Content-Security-Policy"]
    # nothing from the message reaches the viewer's own markup unescaped
    assert "<script>" not in page and "<b>text</b>" not in page
    assert "&lt;script&gt;alert(&#x27;subject&#x27;)&lt;/script&gt;" in page
    assert "Plain &lt;b&gt;text&lt;/b&gt; part" in page
    # the HTML part is only inside a sandboxed iframe's srcdoc, escaped as an attribute value
    assert 'sandbox=""' in page
    srcdoc = page.split('srcdoc="', 1)[1].split('"', 1)[0]
    assert "&lt;p&gt;Hello&lt;/p&gt;&lt;script&gt;alert(&quot;html&quot;)&lt;/script&gt;" in srcdoc
    assert "onerror=&quot;alert(2)&quot;" in srcdoc

    status, headers, raw = get(sink.viewer_url + "message/1.eml")
    assert status == 200 and headers["Content-Type"] == "message/rfc822" and "Plain <b>text</b> part" in raw


def test_unknown_message_is_404(sink):
    assert get(sink.viewer_url + "message/99")[0] == 404
    assert get(sink.viewer_url + "nope")[0] == 404


def test_numbering_continues_after_a_restart(tmp_path):
    folder = tmp_path / "mail"
    smtp_port, http_port = free_port(), free_port()
    with MailSink(HOST, smtp_port, http_port, folder):
        send(smtp_port, subject="before", text="x")
    with MailSink(HOST, free_port(), free_port(), folder) as again:
        send(again.smtp_port, subject="after", text="y")
        listed = json.loads(get(again.viewer_url + "messages.json")[2])
    assert [(m["n"], m["subject"]) for m in listed] == [(2, "after"), (1, "before")]


def test_cli_prints_its_urls_and_stops_on_sigterm(tmp_path):
    smtp_port, http_port = free_port(), free_port()
    repo = Path(__file__).resolve().parents[3]
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apps.devstack.mailsink",
            "--smtp-port",
            str(smtp_port),
            "--http-port",
            str(http_port),
            "--folder",
            str(tmp_path / "mail"),
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline().strip()
        assert line == f"mail sink: smtp://127.0.0.1:{smtp_port}  viewer: http://127.0.0.1:{http_port}/"
        send(smtp_port, subject="via the CLI", text="z")
        assert (
            json.loads(get(f"http://127.0.0.1:{http_port}/messages.json")[2])[0]["subject"] == "via the CLI"
        )
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
