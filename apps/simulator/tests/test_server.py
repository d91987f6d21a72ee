from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from apps.simulator import SimulatorServer

from .conftest import Client, make_company

REPO = Path(__file__).resolve().parents[3]


def test_control_endpoints(fresh: Client) -> None:
    s, base = fresh.session, fresh.base
    assert s.get(base + "/_sim/health").json() == {"ok": True}
    planted = s.get(base + "/_sim/planted").json()
    assert planted["rule"] == "co-exec-review" and len(planted["matches"]) == 12
    assert s.get(base + "/_sim/notes").json() == []
    fresh.server.notes.append({"system": "hubspot", "target": "1", "body": "x"})
    assert s.get(base + "/_sim/notes").json()[0]["body"] == "x"
    touched = s.post(base + "/_sim/mutate", json={"fraction": 0.05, "seed": 3}).json()["touched"]
    assert touched and touched == [list(t) for t in make_company(scale=0.1).mutate(0.05, 3)]
    project = next(iter(fresh.server.company.pc_projects))
    assert s.post(
        base + "/_sim/delete", json={"system": "procore", "object_type": "project", "id": project}
    ).ok
    assert project not in fresh.server.company.pc_projects
    fresh.server.faults.add("status")
    assert s.post(base + "/_sim/reset").json() == {"ok": True}
    assert project in fresh.server.company.pc_projects and fresh.server.notes == []
    assert len(fresh.server.faults) == 0
    assert s.get(base + "/_sim/nope").status_code == 404


def test_requests_log_and_unknown_paths(fresh: Client) -> None:
    fresh.procore("GET", "/rest/v1.0/vendors?company_id=4242&per_page=5")
    assert ("GET", "/rest/v1.0/vendors?company_id=4242&per_page=5") in fresh.server.requests_log
    resp = fresh.session.get(fresh.base + "/api/nothing")
    assert resp.status_code == 404 and resp.json()["error"]
    assert fresh.procore("DELETE", "/rest/v1.0/projects/1").status_code == 405


def test_keep_alive_and_content_length(fresh: Client) -> None:
    with socket.create_connection((fresh.server.host, fresh.server.port)) as sock:
        request = (b"GET /_sim/health HTTP/1.1\r\nHost: x\r\n\r\n") * 2
        sock.sendall(request)
        time.sleep(0.2)
        data = sock.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 2 and b"Content-Length: 11" in data


def test_start_stop_context_manager_and_tokens() -> None:
    server = SimulatorServer(
        make_company(scale=0.1), tokens={"hubspot": "a", "quickbooks": "b", "procore": "c"}
    )
    with server.start() as running:
        assert running is server and running.base_url.startswith("http://127.0.0.1:")
        resp = requests.get(
            running.base_url + "/crm/v3/owners", headers={"Authorization": "Bearer a"}, timeout=5
        )
        assert resp.status_code == 200
        session = requests.Session()
        assert session.get(running.base_url + "/_sim/health", timeout=5).ok
    try:
        session.get(server.base_url + "/_sim/health", timeout=2)
        raise AssertionError("server still answers after stop()")
    except requests.ConnectionError:
        pass


def test_cli_serves_and_exits_cleanly_on_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apps.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--seed",
            "42",
            "--scale",
            "0.1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"simulator listening on http://127.0.0.1:{port}"
        assert requests.get(f"http://127.0.0.1:{port}/_sim/health", timeout=5).json() == {"ok": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
