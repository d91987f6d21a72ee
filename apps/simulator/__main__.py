"""``python -m apps.simulator --host 127.0.0.1 --port 8701 --seed 42 --scale 1.0``"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import date, datetime
from types import FrameType

from .generator import generate_company
from .server import SimulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--today", type=date.fromisoformat, default=None, help="YYYY-MM-DD (default: today)")
    parser.add_argument(
        "--now",
        type=datetime.fromisoformat,
        default=None,
        help="aware ISO timestamp, e.g. 2026-11-23T12:00:00+00:00 (default: now)",
    )
    parser.add_argument(
        "--name-variants",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="spell some clients differently in accounting than in the CRM (default: on)",
    )
    args = parser.parse_args(argv)
    company = generate_company(
        seed=args.seed, scale=args.scale, today=args.today, now=args.now, name_variants=args.name_variants
    )
    server = SimulatorServer(company, host=args.host, port=args.port).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"simulator listening on {server.base_url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
