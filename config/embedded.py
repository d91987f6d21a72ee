"""`python -m config.embedded env | stop | run -- CMD`: the embedded servers from the command line.

Kept apart from ``config.embedded_servers`` because importing the ``config`` package already loads
that module.
"""

from __future__ import annotations

import os
import subprocess
import sys

from config.embedded_servers import STARTED_ENV, ensure_services, stop_postgres, stop_redis


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "env"
    if command == "env":
        ensure_services()
        print(f"export DATABASE_URL={os.environ['DATABASE_URL']}")
        print(f"export CELERY_BROKER_URL={os.environ['CELERY_BROKER_URL']}")
        return 0
    if command == "stop":
        stop_postgres()
        stop_redis()
        return 0
    if command == "run":
        rest = argv[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        ensure_services()
        try:
            return subprocess.call(rest)  # noqa: S603 - the developer's own command line
        finally:
            started = os.environ.get(STARTED_ENV, "").split(",")
            if "postgres" in started:
                stop_postgres()
            if "redis" in started:
                stop_redis()
    print("usage: python -m config.embedded [env | stop | run -- CMD ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
