"""`python -m bench` (make bench): every benchmark in turn, except the 30-minute soak."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "ingest",
    "throughput",
    "rate",
    "scale",
    "events",
    "slowloris",
    "fuzz",
    "spam",
    "templates",
    "clicks",
    "bulk_probe",
    "failover",
)


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"\n== bench.{name}", flush=True)
        failed += subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
