"""Running one piece of test code in several threads at once, each on its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def run_concurrently(
    target: Callable[[], object], threads: int, *, timeout: float = 30
) -> list[BaseException]:
    """Start ``target`` in ``threads`` threads released together by a barrier; wait for them and return
    what they raised (an empty list when all went well). Each thread closes its own connection."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout)
    return errors
