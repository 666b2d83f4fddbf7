"""Throughput: end-to-end recipients/s with the limit set very high, against the fake SES
at zero latency (in its own process), beside a bare aiobotocore `send_email` loop with
the same payload against the same fake, in the same run. The ratio is against the bare
loop at the pipeline's own in-flight limit (the issue's definition); the bare loop at
lower concurrencies is printed for context, since a zero-latency fake needs few calls
in flight while the pipeline keeps each slot until the recorder acknowledges it.

    python -m bench.throughput [--recipients 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.common import arrivals, fake_ses_process, machine, running_tree, ses_env, wait_sent
from config.settings import SesSettings
from pipeline.mail import build, prepare
from pipeline.ses import open_backend
from stages.sender import in_flight_limit
from tests.helpers import campaign

RATE = 100_000.0
HTML = "<html><body>" + "<p>Hello, this is a newsletter paragraph.</p>" * 60 + "</body></html>"


async def bare_loop(url: str, count: int, concurrency: int) -> float:
    """What one process can do with nothing but aiobotocore: the ceiling."""
    import os

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL_SESV2": url}
    )
    settings = SesSettings(backend="ses", region="us-east-1", from_email="news@example.org")
    content = prepare("Hello", HTML)
    async with open_backend(settings, concurrency) as backend:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                await backend.send(build(content, i, f"user{i}@example.com", "bench", "<img>"))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


def pipeline_rate(url: str, count: int) -> float:
    with running_tree(ses_env(url, RATE)) as tree:
        for start in range(0, count, 10_000):
            emails = [f"user{i}@example.com" for i in range(start, min(count, start + 10_000))]
            assert tree.post("/v1/messages", campaign(emails, content=HTML))[0] == 200
        wait_sent(tree, count, timeout_s=600)
    times = arrivals(url)
    return (len(times) - 1) / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count, rounds = args.recipients, args.rounds
    limit = in_flight_limit(RATE, 256)
    bare: dict[int, float] = {}
    for concurrency in (16, 64, limit):
        runs = []
        for _ in range(rounds):
            with fake_ses_process() as url:
                runs.append(asyncio.run(bare_loop(url, count, concurrency)))
        bare[concurrency] = statistics.median(runs)
    runs = []
    for _ in range(rounds):
        with fake_ses_process() as url:
            runs.append(pipeline_rate(url, count))
    ours = statistics.median(runs)
    same = bare[limit]
    print(f"throughput ({machine()}), {count:,} recipients, fake SES at 0 ms, pipeline in-flight limit {limit},")
    print(f"median of {rounds} rounds each:")
    for concurrency, rate in bare.items():
        print(f"  bare aiobotocore send_email loop, {concurrency:3d} in flight: {rate:8.0f} calls/s")
    print(f"  whole pipeline (POST -> recorded sent):        {ours:8.0f} recipients/s")
    print(f"  ratio pipeline / bare loop at {limit} in flight:     {ours / same:8.2f}  (aim: >= 0.9)")
    print(f"  ratio pipeline / best bare loop:               {ours / max(bare.values()):8.2f}  (context)")


if __name__ == "__main__":
    main()
