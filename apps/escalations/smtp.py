"""Django's SMTP backend, sending a message's envelope in one round trip where the server offers it.

A message costs ``MAIL FROM``, one ``RCPT TO`` per recipient and ``DATA``, each waiting for its reply
before the next is sent (``smtplib``), then the content and its reply. A server that announces
``PIPELINING`` in its EHLO reply (RFC 2920; Postfix, Exim, Exchange, Amazon SES and the like do) lets
the client send the envelope's commands together and read their replies after: two round trips a
message instead of four (one recipient). Against a server across a network each is a network round
trip; over loopback to aiosmtpd, 400 emails on one connection took 0.69–0.97 s instead of 0.92–1.10 s
(docs/PERFORMANCE.md).

Everything else is Django's ``smtp.EmailBackend`` and ``smtplib``: the connection, TLS, login, the
message's bytes, and what ``sendmail`` returns or raises for each reply (RFC 2920 §3.1: a refused
envelope's later replies are read before the transaction is reset, so the connection stays usable).
A server without ``PIPELINING``, a call with ESMTP options or a message not given as bytes (Django
gives bytes) is served by ``smtplib`` unchanged.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Sequence
from typing import Any

from django.core.mail.backends import smtp

_LEADING_DOT = re.compile(rb"(?m)^\.")
_CRLF = b"\r\n"


class _Pipelining:
    """``sendmail`` with the envelope pipelined when the server announces it; mixed into ``smtplib.SMTP``."""

    def sendmail(
        self: Any,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: Any,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        self.ehlo_or_helo_if_needed()
        if not isinstance(msg, bytes) or mail_options or rcpt_options or not self.has_extn("pipelining"):
            return smtplib.SMTP.sendmail(self, from_addr, to_addrs, msg, mail_options, rcpt_options)
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        size = f" size={len(msg)}" if self.has_extn("size") else ""
        commands = [f"mail from:{smtplib.quoteaddr(from_addr)}{size}"]
        commands += [f"rcpt to:{smtplib.quoteaddr(to)}" for to in recipients]
        commands.append("data")
        self.send("".join(f"{command}\r\n" for command in commands))

        # Every command's reply is read, in order, whatever the ones before it said; a 421 means the
        # server is closing the connection (smtplib closes it too, and raises what it would have).
        mail = self.getreply()
        if mail[0] == 421:
            self.close()
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], from_addr)
        refused: dict[str, tuple[int, bytes]] = {}
        for to in recipients:
            code, resp = self.getreply()
            if code not in (250, 251):
                refused[to] = (code, resp)
            if code == 421:
                self.close()
                raise smtplib.SMTPRecipientsRefused(refused)
        code, resp = self.getreply()
        envelope_refused = mail[0] != 250 or len(refused) == len(recipients)
        if code == 354 and envelope_refused:
            # A server that accepted DATA after refusing the envelope gets an empty message (§3.1); its
            # reply to that is not the answer: the refusal above is.
            self.send(b"." + _CRLF)
            code = 421 if self.getreply()[0] == 421 else 503
        if code != 354:
            if code == 421:
                self.close()
            else:
                self._rset()
            if mail[0] != 250:
                raise smtplib.SMTPSenderRefused(mail[0], mail[1], from_addr)
            if envelope_refused:
                raise smtplib.SMTPRecipientsRefused(refused)
            raise smtplib.SMTPDataError(code, resp)

        content = _LEADING_DOT.sub(b"..", msg)
        if not content.endswith(_CRLF):
            content += _CRLF
        self.send(content + b"." + _CRLF)
        code, resp = self.getreply()
        if code != 250:
            if code == 421:
                self.close()
            else:
                self._rset()
            raise smtplib.SMTPDataError(code, resp)
        return refused


class SMTP(_Pipelining, smtplib.SMTP):
    pass


class SMTP_SSL(_Pipelining, smtplib.SMTP_SSL):
    pass


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP backend (``EMAIL_URL`` smtp:// or smtps://), with the envelope pipelined."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return SMTP_SSL if self.use_ssl else SMTP
