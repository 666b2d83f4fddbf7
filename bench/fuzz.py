"""`python -m bench.fuzz [examples] [seed]`: a long schemathesis run against the real tree.

The test suite runs the same thing with 15 examples per operation; this one runs 400
by default (about four minutes on 2 cores) and prints schemathesis's summary.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import jwt

from bench.common import running_tree
from tests.helpers import run_schemathesis

SECRET = "bench-fuzz-secret-" + "f" * 40


def main(examples: int = 400, seed: int = 7) -> int:
    token = jwt.encode({"sub": "fuzz", "exp": int(time.time()) + 7200}, SECRET, "HS256")
    with running_tree({"AUTH_DISABLED": "false", "JWT_SECRET": SECRET}) as tree, tempfile.TemporaryDirectory() as work:
        started = time.monotonic()
        result = run_schemathesis(tree.base, token, Path(work), examples, seed, timeout_s=3600)
        elapsed = time.monotonic() - started
        tracebacks = tree.log().count("Traceback")
    cases = re.search(r"(\d+) generated, (.*)", result.stdout)
    print(f"  schemathesis, {examples} examples per operation, seed {seed}: {elapsed:.0f} s")
    print(f"  cases: {cases.group(1)} generated, {cases.group(2)}" if cases else "  (no summary)")
    print(f"  exit code: {result.returncode}; tracebacks in the server log: {tracebacks}")
    if result.returncode != 0:
        print(result.stdout[-8000:])
    return 1 if result.returncode or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:3])))
