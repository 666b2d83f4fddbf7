"""Bulk probe: what one process gets from a bare aiobotocore `send_bulk_email` loop, beside
`send_email`, against the fake SES at 0 ms in a process of its own.

Every recipient has different data (own subject, ~5 KB HTML with their name, link and pixel).
The bulk loop builds each call with pipeline/ses_bulk.py (`to_entry`, `bulk_request`) inside the
timed loop; the single loop sends through `SesBackend.send`, the single-send path. CPU is this
process's CPU time (`time.process_time`, the fake's process not counted) over the timed loop.
A figure for the issue's notes, not a timed test.

    python -m bench.bulk_probe [--recipients 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.common import fake_ses_process, machine
from config.settings import SesSettings
from pipeline.mail import OutgoingMail
from pipeline.ses import SesBackend
from pipeline.ses_bulk import MAX_ENTRIES, BulkEntry, bulk_request, to_entry

SENDER = "news@example.org"
PARAGRAPH = "<p>Dear NAME, this is a newsletter paragraph with a little more text in it.</p>"
HTML = "<html><body>" + PARAGRAPH * 62 + "<p><a href='LINK'>Unsubscribe</a></p>PIXEL</body></html>"
WARM_UP_CALLS = 20


@dataclass(frozen=True, slots=True)
class Run:
    recipients_per_s: float
    cpu_us_per_recipient: float
    calls_per_s: float


def mails(count: int, offset: int = 0) -> list[OutgoingMail]:
    """Distinct mails, as pipeline.mail.build makes them: personal subject, HTML, text, tags, headers."""
    made = []
    for i in range(offset, offset + count):
        link = f"https://mail.example.com/v1/unsubscribe/tok{i:08d}"
        html = HTML.replace("NAME", f"User{i}").replace("LINK", link)
        html = html.replace("PIXEL", f'<img src="https://mail.example.com/v1/events/open/px{i:08d}" alt="">')
        made.append(
            OutgoingMail(
                recipient_id=i,
                to=f"user{i}@example.com",
                subject=f"Hello User{i}, our spring news",
                html=html,
                text=f"Dear User{i}, this is a newsletter.\n\nUnsubscribe: {link}",
                tags=(("request_id", str(i)), ("topic_id", "bench")),
                headers=(("List-Unsubscribe", f"<{link}>"), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")),
            )
        )
    return made


def client_args(url: str, concurrency: int) -> dict[str, Any]:
    from aiobotocore.config import AioConfig

    return {
        "region_name": "us-east-1",
        "endpoint_url": url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        # As pipeline/ses.py configures it: no SDK retries, a pool as large as the calls in flight.
        "config": AioConfig(max_pool_connections=max(concurrency, 10), retries={"total_max_attempts": 1}),
    }


def bulk_call(batch: list[OutgoingMail]) -> dict[str, Any]:
    entries = [entry for entry in map(to_entry, batch) if isinstance(entry, BulkEntry)]
    assert len(entries) == len(batch), "every bench mail fits a bulk entry"
    return bulk_request(SENDER, None, entries)


async def drive(jobs: list[Any], concurrency: int, one: Any) -> tuple[float, float]:
    """Run `one(job)` for every job with `concurrency` workers; (wall s, CPU s)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def bulk_loop(url: str, count: int, concurrency: int) -> Run:
    from aiobotocore.session import get_session

    async with get_session().create_client("sesv2", **client_args(url, concurrency)) as client:

        async def one(batch: list[OutgoingMail]) -> None:
            response = await client.send_bulk_email(**bulk_call(batch))
            assert len(response["BulkEmailEntryResults"]) == len(batch)

        warm = mails(WARM_UP_CALLS * MAX_ENTRIES, offset=10_000_000)
        await drive([warm[i : i + MAX_ENTRIES] for i in range(0, len(warm), MAX_ENTRIES)], concurrency, one)
        all_mails = mails(count)
        batches = [all_mails[i : i + MAX_ENTRIES] for i in range(0, count, MAX_ENTRIES)]
        wall, cpu = await drive(batches, concurrency, one)
    return Run(count / wall, cpu / count * 1e6, len(batches) / wall)


async def single_loop(url: str, count: int, concurrency: int) -> Run:
    from aiobotocore.session import get_session

    settings = SesSettings(backend="ses", region="us-east-1", from_email=SENDER)
    session = get_session()
    args = client_args(url, concurrency)
    async with session.create_client("sesv2", **args) as client:
        backend = SesBackend(settings, client, session, args)
        await drive(mails(WARM_UP_CALLS, offset=10_000_000), concurrency, backend.send)
        wall, cpu = await drive(mails(count), concurrency, backend.send)
    return Run(count / wall, cpu / count * 1e6, count / wall)


def pure_cost_us(count: int) -> float:
    """CPU per recipient of ses_bulk alone (to_entry + bulk_request), no SDK, no network."""
    all_mails = mails(count)
    started = time.process_time()
    for i in range(0, count, MAX_ENTRIES):
        bulk_call(all_mails[i : i + MAX_ENTRIES])
    return (time.process_time() - started) / count * 1e6


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.recipients_per_s for r in runs),
        statistics.median(r.cpu_us_per_recipient for r in runs),
        statistics.median(r.calls_per_s for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--single-recipients", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    body = len(json.dumps(bulk_call(mails(MAX_ENTRIES))))
    results: dict[tuple[str, int], Run] = {}
    for concurrency in (1, 4, 16):
        for name, loop, count in (
            ("send_bulk_email", bulk_loop, args.recipients),
            ("send_email", single_loop, args.single_recipients),
        ):
            runs = []
            for _ in range(args.rounds):
                with fake_ses_process() as url:
                    runs.append(asyncio.run(loop(url, count, concurrency)))
            results[(name, concurrency)] = median_run(runs)
    pure = statistics.median(pure_cost_us(args.recipients) for _ in range(args.rounds))

    print(f"bulk probe ({machine()}), fake SES at 0 ms in its own process, median of {args.rounds} rounds")
    print(
        f"  mail: ~{len(mails(1)[0].html):,} B HTML, each recipient different; bulk call body {body:,} B (50 entries)"
    )
    print(f"  {'loop':<16} {'in flight':>9} {'recipients/s':>13} {'calls/s':>9} {'client CPU us/recipient':>24}")
    for (name, concurrency), run in results.items():
        print(
            f"  {name:<16} {concurrency:>9} {run.recipients_per_s:>13,.0f} {run.calls_per_s:>9,.0f}"
            f" {run.cpu_us_per_recipient:>24,.1f}"
        )
    print(f"  ses_bulk alone (to_entry + bulk_request): {pure:.1f} us CPU per recipient")
    for concurrency in (1, 4, 16):
        bulk, single = results[("send_bulk_email", concurrency)], results[("send_email", concurrency)]
        faster = bulk.recipients_per_s / single.recipients_per_s
        cheaper = single.cpu_us_per_recipient / bulk.cpu_us_per_recipient
        print(f"  {concurrency:>2} in flight: bulk/single recipients/s {faster:.1f}x, CPU single/bulk {cheaper:.1f}x")


if __name__ == "__main__":
    main()
