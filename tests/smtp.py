"""A real SMTP server for tests: aiosmtpd on a free loopback port, around any handler."""

from __future__ import annotations

from typing import Any

from aiosmtpd.controller import Controller

from apps.devstack.mailsink import Pipelining
from config.embedded_servers import free_port


class LoopbackSmtp:
    """aiosmtpd serving ``handler`` (an object with ``async handle_DATA``) on 127.0.0.1:``port``. It can be
    stopped (connections refused) and started again on the same port, as a mail server goes down and
    comes back. It announces ``PIPELINING``, as production mail servers do, unless ``pipelining=False``."""

    def __init__(self, handler: Any, *, pipelining: bool = True) -> None:
        self.handler = _Announcing(handler) if pipelining else handler
        self.port = free_port()  # aiosmtpd needs a concrete port: it connects to itself on start
        self.controller: Controller | None = None

    def start(self) -> None:
        if self.controller is None:
            self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
            self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class _Announcing(Pipelining):
    """``handler`` with an EHLO reply that announces ``PIPELINING``; aiosmtpd finds its other hooks on it
    (by ``dir()``, then ``getattr``)."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *dir(self._handler)})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)
