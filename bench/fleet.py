"""Fleet benchmark: one model placed on one hive, then (another of the same size) on three.

Runs the scaled deployment the fleet tests run (PostgreSQL and Redis on 127.0.0.1, daphne,
three `hive_worker` processes with their own models dirs and peer ports, the fake Hub with
every LFS body throttled per request) and reports, for each placement, the wall time from
the POST to the last job's end and the bytes the Hub served. With peers, three hives should
take about the time of one and cost the origin about one copy.

    make bench-fleet
    .venv/bin/python bench/fleet.py --size-mib 16 --origin-mibps 16   # quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def place(fleet: Any, repo: str, hives: tuple[str, ...], seed: int, size: int, origin_bps: int) -> tuple[float, int, int]:
    """(seconds, bytes the origin served, model bytes) for one placement."""
    from tests.test_fleet import WEIGHTS, _model, _wait_all

    files = _model(fleet, repo, seed=seed, size=size, origin_bps=origin_bps)
    client = fleet.dashboard.client()
    try:
        started = time.monotonic()
        jobs = _wait_all(fleet, client, fleet.place(client, repo, hives), timeout=3600)
        elapsed = time.monotonic() - started
    finally:
        client.close()
    failed = [j for j in jobs if j["state"] != "succeeded"]
    if failed:
        raise SystemExit(f"placement failed: {failed}")
    return elapsed, fleet.origin_bytes(repo, WEIGHTS), sum(len(d) for d in files.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=64, help="size of each of the three weight files")
    parser.add_argument("--origin-mibps", type=int, default=32, help="the origin's rate per request, MiB/s")
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rbee-bench-fleet-", dir=args.tmpdir) as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    # The test helpers use the ORM (for their own tests): set Django up, out of the way.
    os.environ["DJANGO_SETTINGS_MODULE"] = "rbee.settings"
    os.environ.setdefault("RBEE_DATA_DIR", str(tmp / "bench-process"))
    import django

    django.setup()
    from tests.test_fleet import HIVES, MIB, _unreachable, running_fleet

    if reason := _unreachable():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    size, origin_bps = args.size_mib * MIB, args.origin_mibps * MIB
    with running_fleet(tmp / "fleet") as fleet:
        one = place(fleet, "bench/fleet-one", HIVES[:1], 100, size, origin_bps)
        three = place(fleet, "bench/fleet-three", HIVES, 200, size, origin_bps)
    print(f"model: 3 x {args.size_mib} MiB + config; origin throttled to {args.origin_mibps} MiB/s per request")
    print(f"{'placement':<12} {'time':>8} {'origin bytes':>14} {'x model':>8}")
    for label, (seconds, served, model) in (("1 hive", one), ("3 hives", three)):
        print(f"{label:<12} {seconds:>7.1f}s {served:>14,} {served / model:>8.2f}")
    print(f"3 hives / 1 hive: time {three[0] / one[0]:.2f}x, origin bytes {three[1] / max(1, one[1]):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
