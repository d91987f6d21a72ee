"""`make demo`: the whole product on one machine.

Starts (embedded PostgreSQL/Redis when none are configured), the upstream simulator, a local SMTP sink
with a mail viewer, migrates, seeds the demo company, runs web + Celery worker + beat, syncs the three
simulated systems, and prints the URLs and logins. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from zoneinfo import ZoneInfo

from config.embedded_servers import (
    BASE_DIR,
    DATA_DIR,
    STARTED_ENV,
    ensure_services,
    stop_postgres,
    stop_redis,
)

WEB_PORT = int(os.environ.get("DEMO_WEB_PORT", "8000"))
SIM_PORT = int(os.environ.get("DEMO_SIMULATOR_PORT", "8701"))
SMTP_PORT = int(os.environ.get("DEMO_SMTP_PORT", "1025"))
MAIL_PORT = int(os.environ.get("DEMO_MAIL_VIEWER_PORT", "8025"))
PY = sys.executable


def _wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback services
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"demo: {url} did not come up within {seconds:.0f}s")


class Stack:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs = DATA_DIR / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *argv: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        child = subprocess.Popen(  # noqa: S603 - our own fixed command lines
            argv, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, child))

    def manage(self, *args: str) -> None:
        subprocess.run([PY, "manage.py", *args], cwd=BASE_DIR, check=True)  # noqa: S603

    def check_alive(self) -> None:
        for name, child in self.children:
            if child.poll() is not None:
                raise SystemExit(
                    f"demo: {name} exited ({child.returncode}); see {self.logs / (name + '.log')}"
                )

    def stop(self) -> None:
        for _name, child in reversed(self.children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for _name, child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


def company_today() -> str:
    """Today in the company's time zone. The simulator plants its dates relative to the day it is given,
    and the facts count days in TIME_ZONE (Django sets the process time zone to it; the simulator runs
    without Django, in the machine's zone): between midnight UTC and midnight in Chicago the two days
    differ, and the planted "renewal in exactly 60 days" was 61 days away in the demo."""
    from config.settings.base import TIME_ZONE

    return dt.datetime.now(ZoneInfo(TIME_ZONE)).date().isoformat()


GENERATION_FILE = DATA_DIR / "simulator.json"
SEED = 42


def simulator_generation(today: str, *, now: dt.datetime | None = None) -> tuple[dict[str, object], bool]:
    """The simulator's parameters for this start, and whether they are a new generation.

    The simulator is deterministic for (seed, today, now): ids, values and timestamps alike. Started with
    a new ``now`` (or a new day) after a first demo, its records carried other timestamps and dates, the
    incremental sync re-read only those past its cursors, and the database held two generations mixed:
    planted facts from one and the rest from the other (7 spurious executive escalations). So the first
    generation's parameters are kept in ``.data/simulator.json`` and reused while the company's day is
    the same (a restart serves exactly the same records). On a new day the world is generated afresh,
    and the demo re-reads every record (a full sync), replacing the old generation whole.
    """
    try:
        stored = json.loads(GENERATION_FILE.read_text())
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict) and stored.get("today") == today and stored.get("seed") == SEED:
        return stored, False
    moment = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    generation: dict[str, object] = {"seed": SEED, "today": today, "now": moment.isoformat()}
    GENERATION_FILE.parent.mkdir(parents=True, exist_ok=True)
    GENERATION_FILE.write_text(json.dumps(generation, indent=2) + "\n")
    # New: a full sync (on an empty database the same work as a first incremental one).
    return generation, True


def load_systems(stack: Stack, *, full: bool) -> None:
    """Sync the three simulated systems and the document tool, then resolve what exact keys left unlinked.

    Without the resolution the review queue stayed empty until beat's ``resolve-entities`` (every 15
    minutes) first ran: the planted QuickBooks name variants ("Alder Manufacturing Billing", "Three Rivers
    Sch Dist") were neither linked nor queued when the demo printed its URLs.
    """
    for slug in ("crm", "accounting", "pm", "docs"):
        # Documents last: they link to the projects and change orders the others loaded.
        # A new day's generation replaces the previous one whole (same ids, newer versions).
        stack.manage("sync", slug, *(["--full"] if full else []))
    stack.manage("resolve_entities")


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    # Off, as users will run it: Fulcrum's own 404/403/500 pages, not Django's debug pages (local settings
    # serve the static files without collectstatic either way).
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("EMAIL_URL", f"smtp://127.0.0.1:{SMTP_PORT}")
    os.environ.setdefault("SITE_URL", f"http://127.0.0.1:{WEB_PORT}")
    ensure_services()
    stack = Stack()
    try:
        print("demo: starting the upstream simulator and the mail sink", flush=True)
        generation, regenerated = simulator_generation(company_today())
        stack.start(
            "simulator",
            PY,
            "-m",
            "apps.simulator",
            "--port",
            str(SIM_PORT),
            "--seed",
            str(generation["seed"]),
            "--today",
            str(generation["today"]),
            "--now",
            str(generation["now"]),
        )
        stack.start(
            "mailsink",
            PY,
            "-m",
            "apps.devstack.mailsink",
            "--smtp-port",
            str(SMTP_PORT),
            "--http-port",
            str(MAIL_PORT),
            "--folder",
            str(DATA_DIR / "mail"),
        )
        stack.manage("migrate", "--no-input", "-v", "0")
        _wait_http(f"http://127.0.0.1:{SIM_PORT}/_sim/health")
        # --force: the demo's DEBUG is off; these are the demo's own published logins.
        stack.manage("seed_demo", "--force", "--simulator-url", f"http://127.0.0.1:{SIM_PORT}")
        print("demo: starting web, worker and beat", flush=True)
        stack.start(
            "web",
            PY,
            "-m",
            "gunicorn",
            "config.wsgi",
            "-b",
            f"127.0.0.1:{WEB_PORT}",
            "-w",
            "2",
            "--timeout",
            "60",
        )
        stack.start("worker", PY, "-m", "celery", "-A", "config", "worker", "-l", "info", "-c", "2")
        stack.start(
            "beat",
            PY,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "-l",
            "info",
            "-s",
            str(DATA_DIR / "celerybeat-schedule"),
        )
        _wait_http(f"http://127.0.0.1:{WEB_PORT}/healthz")
        load_systems(stack, full=regenerated)
        print(
            f"""
Fulcrum demo is running.
  Dashboard        http://127.0.0.1:{WEB_PORT}/dashboard/
  My escalations   http://127.0.0.1:{WEB_PORT}/my/escalations/
  Admin            http://127.0.0.1:{WEB_PORT}/admin/
  API schema       http://127.0.0.1:{WEB_PORT}/api/schema/
  Health           http://127.0.0.1:{WEB_PORT}/healthz
  Mail viewer      http://127.0.0.1:{MAIL_PORT}/      (escalation emails land here)
  Simulator        http://127.0.0.1:{SIM_PORT}/_sim/planted
  Planted documents http://127.0.0.1:{SIM_PORT}/_sim/docai/planted

Logins (password fulcrum-demo): admin (Administrators), ops (Operations managers),
  exec (Executives), maria and james (Account managers).
Logs: {stack.logs}.  Ctrl-C stops everything.""",
            flush=True,
        )
        while True:
            time.sleep(1)
            stack.check_alive()
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
        return 0
    finally:
        stack.stop()
        embedded = os.environ.get(STARTED_ENV, "").split(",")
        if "postgres" in embedded:
            stop_postgres()
        if "redis" in embedded:
            stop_redis()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Explicit handlers: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
