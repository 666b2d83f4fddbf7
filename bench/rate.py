"""Rate accuracy: the achieved mean rate and the most recipients in any rolling second, as
fractions of MAX_SEND_PER_SECOND, with 50 ms and 500 ms of SES latency.

With SendBulkEmail (the default) a call carries up to 50 ms of the rate (50 recipients at
1,000/s, one at 14/s); `--single` runs the same cases with SES_BULK=false, one SendEmail per
recipient. The fake SES records each bulk entry as an arrival of its own.

    python -m bench.rate [--seconds 10] [--single]
"""

from __future__ import annotations

import argparse

from bench.common import arrivals, fake_ses_process, machine, running_tree, ses_env, wait_sent
from tests.fakes.fake_ses import max_in_any_window
from tests.helpers import campaign

# (latency ms, limit per s). 1,000/s at 500 ms would need 500 recipients in flight (the cap is 256).
CASES = [(50, 14.0), (50, 100.0), (50, 400.0), (50, 1000.0), (500, 14.0), (500, 100.0), (500, 200.0), (500, 400.0)]


def measure(latency_ms: int, rate: float, seconds: float, bulk: bool) -> tuple[float, float]:
    count = int(rate * seconds)
    with fake_ses_process(latency_ms=latency_ms) as url:
        with running_tree({**ses_env(url, rate), "SES_BULK": "true" if bulk else "false"}) as tree:
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
    parser.add_argument("--single", action="store_true", help="SES_BULK=false: one SendEmail per recipient")
    args = parser.parse_args()
    mode = "SendEmail, one per recipient" if args.single else "SendBulkEmail, up to 50 ms of the rate per call"
    print(f"rate accuracy ({machine()}), {mode}, about {args.seconds:g} s of sending per case:")
    print("  latency   limit/s   mean/limit   max in any 1 s window / limit")
    for latency_ms, rate in CASES:
        mean, peak = measure(latency_ms, rate, args.seconds, bulk=not args.single)
        print(f"  {latency_ms:5d} ms  {rate:7.0f}   {mean:10.3f}   {peak:10.3f}  (must be <= 1)")


if __name__ == "__main__":
    main()
