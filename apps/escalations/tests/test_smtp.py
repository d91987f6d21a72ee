"""The SMTP client with the envelope pipelined (``apps.escalations.smtp``), over real SMTP (aiosmtpd).

Every case is held to ``smtplib``'s own ``sendmail`` against the same server: what it returns or raises,
what the server received, and that the connection is still usable for the next message."""

from __future__ import annotations

import smtplib
import threading
from typing import Any

import pytest
from django.core.mail import EmailMessage, get_connection

from apps.escalations import smtp
from tests.smtp import LoopbackSmtp

# A line starting with a dot (dot-stuffed on the wire) and no final line break.
CONTENT = b"Subject: hello\r\nTo: a@example.com\r\n\r\nfirst line\r\n.dotted line\r\n..two dots\r\nlast"


class Recorder:
    """Accepts every message unless told otherwise: ``mail`` / ``rcpt`` / ``data`` map an address to the
    reply to give its MAIL, RCPT or end of DATA; each accepted message is kept with its envelope."""

    def __init__(self) -> None:
        self.mail: dict[str, str] = {}
        self.rcpt: dict[str, str] = {}
        self.data: dict[str, str] = {}
        self.received: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.mail:
            return self.mail[address]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.rcpt:
            return self.rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for address in envelope.rcpt_tos:
            if address in self.data:
                return self.data[address]
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture
def servers():
    """The same handler served twice: announcing PIPELINING, and not."""
    recorder = Recorder()
    announcing, plain = LoopbackSmtp(recorder), LoopbackSmtp(recorder, pipelining=False)
    announcing.start()
    plain.start()
    yield recorder, announcing, plain
    announcing.stop()
    plain.stop()


class Writes:
    """Counts the client's writes to the socket: one round trip each, for a client that waits for replies."""

    def __init__(self, client: smtplib.SMTP) -> None:
        self.count = 0
        send = client.send

        def counted(data: Any) -> None:
            self.count += 1
            send(data)

        client.send = counted  # type: ignore[method-assign]


def _outcome(client: smtplib.SMTP, to: list[str], sender: str = "from@example.com") -> Any:
    try:
        return ("returned", client.sendmail(sender, to, CONTENT))
    except smtplib.SMTPException as exc:
        return (type(exc).__name__, exc.args)


def test_a_server_that_announces_pipelining_gets_the_envelope_in_one_write(servers):
    recorder, announcing, plain = servers
    client = smtp.SMTP("127.0.0.1", announcing.port)
    client.ehlo()
    assert client.has_extn("pipelining")
    writes = Writes(client)
    assert client.sendmail("from@example.com", ["a@example.com", "b@example.com"], CONTENT) == {}
    assert writes.count == 2  # MAIL, RCPT, RCPT, DATA together; then the content
    client.quit()

    reference = smtplib.SMTP("127.0.0.1", plain.port)
    reference.ehlo()
    writes = Writes(reference)
    reference.sendmail("from@example.com", ["a@example.com", "b@example.com"], CONTENT)
    assert writes.count == 5  # each command waits for its reply
    reference.quit()

    # Both arrive the same: the envelope, and the content dot-stuffed on the wire and restored.
    first, second = recorder.received
    assert first == second
    assert first == ("from@example.com", ["a@example.com", "b@example.com"], CONTENT + b"\r\n")


def test_without_pipelining_announced_the_client_waits_for_each_reply(servers):
    recorder, _, plain = servers
    client = smtp.SMTP("127.0.0.1", plain.port)
    writes = Writes(client)
    assert client.sendmail("from@example.com", ["a@example.com"], CONTENT) == {}
    assert writes.count == 4 + 1  # EHLO, MAIL, RCPT, DATA, content
    assert recorder.received == [("from@example.com", ["a@example.com"], CONTENT + b"\r\n")]
    client.quit()


MAIL_REFUSED = {"mail": {"bad@example.com": "550 5.7.1 sender refused"}}
NO_SUCH_USER = "550 5.1.1 no such user"  # for b@example.com and b@x.com
CASES = {
    "sender refused": (MAIL_REFUSED, "bad@example.com", ["a@example.com"]),
    "one recipient refused": ({"rcpt": {"b@x.com": NO_SUCH_USER}}, None, ["a@example.com", "b@x.com"]),
    "every recipient refused": (
        {"rcpt": {"b@example.com": NO_SUCH_USER, "c@example.com": "450 4.2.1 busy"}},
        None,
        ["b@example.com", "c@example.com"],
    ),
    "content refused": ({"data": {"a@example.com": "554 5.7.1 message refused"}}, None, ["a@example.com"]),
    "content deferred": ({"data": {"a@example.com": "451 4.3.0 try again later"}}, None, ["a@example.com"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_refusal_is_what_smtplib_says_and_the_connection_stays_usable(servers, case):
    recorder, announcing, plain = servers
    answers, sender, to = CASES[case]
    for name, replies in answers.items():
        getattr(recorder, name).update(replies)
    outcomes = []
    for client in (smtp.SMTP("127.0.0.1", announcing.port), smtplib.SMTP("127.0.0.1", plain.port)):
        outcomes.append(_outcome(client, to, sender or "from@example.com"))
        # The stream is in step: the next message on the same connection goes through.
        assert client.sendmail("next@example.com", ["z@example.com"], b"Subject: next\r\n\r\nnext\r\n") == {}
        client.quit()
    pipelined, reference = outcomes
    assert pipelined == reference
    assert pipelined[0] != "returned" or pipelined[1]  # every case is a refusal of some kind
    # Each side delivered the same: the next message, and the message itself when one recipient took it.
    received = [(sender, tos) for sender, tos, _ in recorder.received]
    assert received[: len(received) // 2] == received[len(received) // 2 :]


def test_a_server_closing_at_the_sender_closes_the_client_as_smtplib_does(servers):
    recorder, announcing, plain = servers
    recorder.mail["bye@example.com"] = "421 4.3.2 shutting down"
    outcomes = []
    for client in (smtp.SMTP("127.0.0.1", announcing.port), smtplib.SMTP("127.0.0.1", plain.port)):
        outcomes.append(_outcome(client, ["a@example.com"], "bye@example.com"))
        assert client.sock is None  # closed: the next message needs a new connection
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == "SMTPSenderRefused"


def test_the_product_sends_email_through_the_pipelining_backend(servers, monkeypatch):
    """``EMAIL_URL`` smtp://… gives this backend (config/settings/base.py); Django's message reaches the
    server whole, with its envelope pipelined."""
    from config.settings.base import email_settings

    for url, backend in (
        ("smtp://127.0.0.1:1025", "apps.escalations.smtp.EmailBackend"),
        ("smtps://user:pass@mail.example.com:465", "apps.escalations.smtp.EmailBackend"),
        ("consolemail://", "django.core.mail.backends.console.EmailBackend"),
    ):
        monkeypatch.setenv("EMAIL_URL", url)
        assert email_settings()["EMAIL_BACKEND"] == backend, url

    recorder, announcing, _ = servers
    backend = get_connection("apps.escalations.smtp.EmailBackend", host="127.0.0.1", port=announcing.port)
    backend.open()
    writes = Writes(backend.connection)
    message = EmailMessage("Änderung", "Zeile\n.Punkt\n", "ops@example.com", ["am@example.com"])
    message.connection = backend
    assert message.send() == 1
    backend.close()
    assert writes.count == 4  # EHLO, the envelope, the content, QUIT
    [(sender, to, content)] = recorder.received
    assert (sender, to) == ("ops@example.com", ["am@example.com"])
    assert b"\r\n.Punkt" in content and b"Subject: =?utf-8?" in content


def test_a_server_that_takes_data_after_refusing_the_envelope_gets_an_empty_message():
    """RFC 2920 §3.1: the client sends a lone dot, never the content, and reports the refusal. aiosmtpd
    refuses DATA then, so a scripted server plays one that does not."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    heard: list[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"220 scripted\r\n")
            for line in lines:
                heard.append(line)
                command = line[:4].lower()
                if command == b"ehlo":
                    connection.sendall(b"250-scripted\r\n250 PIPELINING\r\n")
                elif command == b"data":  # the envelope's three replies, written at once
                    connection.sendall(b"550 5.7.1 sender refused\r\n503 5.5.1 no sender\r\n354 go on\r\n")
                elif line == b".\r\n":
                    connection.sendall(b"250 2.0.0 nothing queued\r\n")
                elif command == b"rset":
                    connection.sendall(b"250 2.0.0 reset\r\n")
                elif command == b"quit":
                    connection.sendall(b"221 2.0.0 bye\r\n")
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = smtp.SMTP("127.0.0.1", port)
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("bad@example.com", ["a@example.com"], CONTENT)
    assert refused.value.smtp_code == 550
    client.quit()
    thread.join(5)
    listener.close()
    said = [line.rstrip(b"\r\n").lower() for line in heard[1:]]
    assert said == [
        b"mail from:<bad@example.com>",
        b"rcpt to:<a@example.com>",
        b"data",
        b".",
        b"rset",
        b"quit",
    ]
