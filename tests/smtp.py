"""A real SMTP server for tests: aiosmtpd on a free loopback port, around any handler."""

from __future__ import annotations

from typing import Any

from aiosmtpd.controller import Controller

from config.embedded_servers import free_port


class LoopbackSmtp:
    """aiosmtpd serving ``handler`` (an object with ``async handle_DATA``) on 127.0.0.1:``port``. It can be
    stopped (connections refused) and started again on the same port, as a mail server goes down and
    comes back."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
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
