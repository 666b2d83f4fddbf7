"""Rate accuracy: the achieved mean rate and the most calls in any rolling second, as
fractions of MAX_SEND_PER_SECOND, with 50 ms and 500 ms of SES latency.

    python -m bench.rate [--seconds 10]
"""

from __future__ import annotations

import argparse

from bench.common import arrivals, fake_ses_process, machine, running_tree, ses_env, wait_sent
from tests.fakes.fake_ses import max_in_any_window
from tests.helpers import campaign

CASES = [(50, 100.0), (50, 400.0), (500, 100.0), (500, 200.0)]  # (latency ms, limit per s)


def measure(latency_ms: int, rate: float, seconds: float) -> tuple[float, float]:
    count = int(rate * seconds)
    with fake_ses_process(latency_ms=latency_ms) as url:
        with running_tree(ses_env(url, rate)) as tree:
            for start in range(0, count, 10_000):
                emails = [f"user{i}@example.com" for i in range(start, min(count, start + 10_000))]
                assert tree.post("/v1/messages", campaign(emails))[0] == 200
            wait_sent(tree, count, timeout_s=seconds * 5 + 60)
        times = arrivals(url)
    mean = (len(times) - 1) / (times[-1] - times[0])
    return mean / rate, max_in_any_window(times) / rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    seconds = parser.parse_args().seconds
    print(f"rate accuracy ({machine()}), about {seconds:g} s of sending per case:")
    print("  latency   limit/s   mean/limit   max in any 1 s window / limit")
    for latency_ms, rate in CASES:
        mean, peak = measure(latency_ms, rate, seconds)
        print(f"  {latency_ms:5d} ms  {rate:7.0f}   {mean:10.3f}   {peak:10.3f}  (must be <= 1)")


if __name__ == "__main__":
    main()
