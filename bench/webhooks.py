"""Webhook receiver throughput under gunicorn, against a bare insert view on the same stack.

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev .venv/bin/python -m bench.webhooks [-n 3000]

Creates (afresh) and migrates the database ``fulcrum_bench_hooks`` on the server of DATABASE_URL, starts
gunicorn (``config.wsgi``, 2 workers) on a free loopback port with the broker at redis db 13, sends N signed
QuickBooks deliveries from 8 threads (one ``requests.Session`` each), and prints accepted/s, p50/p99 latency
and lost = stored - unique sent. Then the same load against a bare Django view that inserts one row
(``bench.bare_settings``): the physical reference. Redis db 13 is flushed at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "fulcrum_bench_hooks"
BROKER = "redis://127.0.0.1:6379/13"
VERIFIER = "bench-verifier-token"
SLUG = "bench-qbo"
THREADS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _database_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1/fulcrum_dev")
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{DB_NAME}"))


def _env(settings_module: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "False",
        "DJANGO_SETTINGS_MODULE": settings_module,
        "LOG_LEVEL": "ERROR",
        "CONN_MAX_AGE": "600",
    }


def _recreate_database() -> None:
    import psycopg

    parts = urllib.parse.urlsplit(_database_url())
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=_env("config.settings.test"),
        check=True,
    )


def _setup_django() -> None:
    os.environ.update(_env("config.settings.test"))
    import django

    django.setup()


class Server:
    """gunicorn with 2 sync workers on a free loopback port."""

    def __init__(self, settings_module: str, probe: str) -> None:
        self.probe = probe
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--log-level",
                "error",
                "--backlog",
                "2048",
            ],
            cwd=ROOT,
            env=_env(settings_module),
        )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    requests.get(f"{self.base_url}{self.probe}", timeout=10)
                    return self
                except requests.ConnectionError:
                    time.sleep(0.2)
            raise RuntimeError("gunicorn did not start")
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _load(url: str, bodies: list[tuple[dict[str, str], bytes]]) -> tuple[float, list[float], dict[int, int]]:
    """Send every body from THREADS threads; (seconds, latencies, count per status)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    shares = [bodies[i::THREADS] for i in range(THREADS)]
    start_gate = threading.Barrier(THREADS + 1)

    def worker(share: list[tuple[dict[str, str], bytes]]) -> None:
        session = requests.Session()
        mine: list[float] = []
        codes: dict[int, int] = {}
        start_gate.wait()
        for headers, body in share:
            began = time.perf_counter()
            status = session.post(url, data=body, headers=headers, timeout=30).status_code
            mine.append(time.perf_counter() - began)
            codes[status] = codes.get(status, 0) + 1
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                statuses[code] = statuses.get(code, 0) + n

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies, statuses


def _quantile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else 0.0
    )


def _report(name: str, n: int, seconds: float, latencies: list[float], statuses: dict[int, int]) -> float:
    accepted = statuses.get(202, 0)
    rate = accepted / seconds
    print(
        f"{name:<10} {n} sent in {seconds:.2f}s: {rate:,.0f} accepted/s; "
        f"p50 {_quantile(latencies, 0.5) * 1000:.1f} ms, p99 {_quantile(latencies, 0.99) * 1000:.1f} ms; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    return rate


def _warm(url: str, make: Callable[[int], tuple[dict[str, str], bytes]]) -> None:
    """A few requests per worker first: connections, imports and the broker pool are per process."""
    session = requests.Session()
    for i in range(40):
        headers, body = make(10_000_000 + i)
        session.post(url, data=body, headers=headers, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=3000, help="deliveries to send (default 3000)")
    args = parser.parse_args(argv)

    _recreate_database()
    _setup_django()
    import redis

    from apps.connectors.models import Connection, WebhookDelivery
    from apps.simulator.webhooks import qbo_delivery, qbo_entity

    connection = Connection(slug=SLUG, kind="quickbooks", base_url="http://127.0.0.1:9/")
    connection.options = {"realm_id": "9130350000000001"}
    connection.webhook_secrets = [VERIFIER]
    connection.save()
    stamp = int(time.time() * 1000) // 1000 * 1000

    def delivery(i: int) -> tuple[dict[str, str], bytes]:
        entity = qbo_entity("invoice", 1 + i % 5000, "Update", last_updated=stamp + i * 1000)
        return qbo_delivery(VERIFIER, [entity])

    bodies = [delivery(i) for i in range(args.n)]
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{THREADS} client threads, 2 gunicorn workers"
    )
    unique_sent = len({body for _, body in bodies})
    rates = {}
    try:
        with Server("config.settings.test", probe="/webhooks/-/") as server:
            url = f"{server.base_url}/webhooks/{SLUG}/"
            _warm(url, delivery)
            warm = WebhookDelivery.objects.count()
            seconds, latencies, statuses = _load(url, bodies)
            rates["webhook"] = _report("webhook", args.n, seconds, latencies, statuses)
        stored = WebhookDelivery.objects.count() - warm
        print(f"{'':<10} stored {stored}, unique sent {unique_sent}: lost = {unique_sent - stored}")

        with Server("bench.bare_settings", probe="/ping/") as server:
            url = f"{server.base_url}/bare/{connection.pk}/"
            _warm(url, delivery)
            seconds, latencies, statuses = _load(url, bodies)
            rates["bare"] = _report("bare view", args.n, seconds, latencies, statuses)
        print(f"ratio webhook / bare insert view: {rates['webhook'] / rates['bare']:.2f} (target >= 0.6)")
    finally:
        queued = redis.Redis.from_url(BROKER)
        print(f"queued tasks left in redis db 13: {queued.llen('celery')} (flushed)")
        queued.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
