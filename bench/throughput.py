"""Throughput: end-to-end recipients/s with the limit set very high, against the fake SES
at zero latency (in its own process), beside a bare aiobotocore loop with the same payload
against the same fake, in the same run. Two cases:

- single: SES_BULK=false, one SendEmail per recipient, against a bare `send_email` loop. The
  ratio is against the bare loop at the pipeline's own in-flight limit (the issue's
  definition); the bare loop at lower concurrencies is printed for context, since a
  zero-latency fake needs few calls in flight while the pipeline keeps each slot until the
  recorder acknowledges it.
- bulk: SendBulkEmail, every recipient with different data (a personalized campaign of three
  fields, each mail ~5 KB), against a bare loop of `SesBackend.send_bulk` (the same client
  configuration, the same request building) over the same mails, rendered before its clock
  starts, at as many calls in flight as the pipeline's slots make (in-flight limit / 50),
  and at 16 for context.

    python -m bench.throughput [--recipients 20000] [--rounds 3] [--only single|bulk]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from bench.bulk_probe import PARAGRAPH
from bench.common import arrivals, fake_ses_process, machine, running_tree, ses_env, wait_sent
from config.settings import SesSettings
from pipeline.mail import OutgoingMail, Unsubscribe, build, build_personal, prepare, prepare_template
from pipeline.ses import open_backend
from pipeline.ses_bulk import MAX_ENTRIES, EntrySent, partition
from pipeline.tracking import pixel_tag
from pipeline.unsubscribe import DEFAULT_HTML_FOOTER, signed_headers, signed_url, token
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


# A ~5 KB newsletter greeting each recipient by name, with their plan, city and link.
PERSONAL_HTML = (
    "<html><body><p>Hello {{first_name}},</p>"
    + PARAGRAPH.replace("Dear NAME, this", "This") * 60
    + "<p>Your {{plan}} plan now ships to {{city}}. Thank you, {{first_name}}.</p>"
    + '<p><a href="{{unsubscribe_url}}">Unsubscribe</a></p></body></html>'
)
PERSONAL_SUBJECT = "Hello {{first_name}}, our spring news"
SERVER = "http://127.0.0.1:3000"


def person(i: int) -> dict[str, object]:
    return {"email": f"user{i}@example.com", "data": {"first_name": f"User{i}", "plan": "pro", "city": f"City{i}"}}


def personalized(start: int, stop: int) -> dict[str, object]:
    message = {"topic_id": "bench", "subject": PERSONAL_SUBJECT, "content": PERSONAL_HTML}
    return {"messages": [{**message, "recipients": [person(i) for i in range(start, stop)]}]}


def personal_mails(count: int) -> list[OutgoingMail]:
    """The pipeline's own mails for the campaign above (rendered, linked, with a pixel): the bare
    loop's payload, made before its clock starts."""
    content = prepare_template(PERSONAL_SUBJECT, PERSONAL_HTML, None, list_id=None, footer=DEFAULT_HTML_FOOTER)
    key = b"k" * 32
    made = []
    for i in range(count):
        signed = token(key, i, None)
        link = Unsubscribe(signed_url(SERVER, signed), tuple(signed_headers(SERVER, signed, None, None)))
        pixel = pixel_tag(SERVER, key, i)
        data = json.dumps(person(i)["data"])
        made.append(build_personal(content, i, f"user{i}@example.com", "bench", data, pixel, link))
    return made


async def bare_bulk_loop(url: str, count: int, concurrency: int) -> float:
    """The ceiling for bulk: SesBackend.send_bulk (to_entry, bulk_request, the SDK call, the
    results by position) over the same mails, configured as the sender configures it."""
    import os

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL_SESV2": url}
    )
    settings = SesSettings(backend="ses", region="us-east-1", from_email="news@example.org")
    made = personal_mails(count)
    async with open_backend(settings, concurrency * MAX_ENTRIES) as backend:
        queue: asyncio.Queue[list[OutgoingMail]] = asyncio.Queue()
        for i in range(0, count, MAX_ENTRIES):
            queue.put_nowait(made[i : i + MAX_ENTRIES])

        async def worker() -> None:
            while not queue.empty():
                entries, _ = partition(queue.get_nowait())
                outcomes = await backend.send_bulk(entries)
                assert all(isinstance(o, EntrySent) for o in outcomes)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


def pipeline_rate(url: str, count: int, bulk: bool) -> float:
    env = {**ses_env(url, RATE), "SES_BULK": "true" if bulk else "false"}
    with running_tree(env) as tree:
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            emails = [f"user{i}@example.com" for i in range(start, stop)]
            body = personalized(start, stop) if bulk else campaign(emails, content=HTML)
            assert tree.post("/v1/messages", body)[0] == 200
        wait_sent(tree, count, timeout_s=600)
    times = arrivals(url)
    return (len(times) - 1) / (times[-1] - times[0])


def median_of(rounds: int, measure: object) -> float:
    runs = []
    for _ in range(rounds):
        with fake_ses_process() as url:
            runs.append(measure(url))  # type: ignore[operator]
    return float(statistics.median(runs))


def single_case(count: int, rounds: int) -> None:
    limit = in_flight_limit(RATE, 256)
    bare = {c: median_of(rounds, lambda url, c=c: asyncio.run(bare_loop(url, count, c))) for c in (16, 64, limit)}
    ours = median_of(rounds, lambda url: pipeline_rate(url, count, bulk=False))
    print(f"single (SES_BULK=false): {count:,} recipients, pipeline in-flight limit {limit}, median of {rounds}:")
    for concurrency, rate in bare.items():
        print(f"  bare aiobotocore send_email loop, {concurrency:3d} in flight: {rate:8.0f} calls/s")
    print(f"  whole pipeline (POST -> recorded sent):        {ours:8.0f} recipients/s")
    print(f"  ratio pipeline / bare loop at {limit} in flight:     {ours / bare[limit]:8.2f}  (aim: >= 0.9)")
    print(f"  ratio pipeline / best bare loop:               {ours / max(bare.values()):8.2f}  (context)")


def bulk_case(count: int, rounds: int) -> None:
    calls = max(1, in_flight_limit(RATE, 256) // 50)
    bare = {
        c: median_of(rounds, lambda url, c=c: asyncio.run(bare_bulk_loop(url, count, c))) for c in sorted({calls, 16})
    }
    ours = median_of(rounds, lambda url: pipeline_rate(url, count, bulk=True))
    print(f"bulk (SendBulkEmail, every recipient different): {count:,} recipients, median of {rounds}:")
    for concurrency, rate in bare.items():
        print(f"  bare aiobotocore send_bulk_email loop, {concurrency:2d} calls in flight: {rate:8.0f} recipients/s")
    print(f"  whole pipeline (POST -> recorded sent):              {ours:8.0f} recipients/s  (aim: >= 5,000)")
    print(f"  ratio pipeline / bare bulk loop at {calls} in flight:      {ours / bare[calls]:8.2f}  (aim: >= 0.9)")
    print(f"  ratio pipeline / best bare bulk loop:                {ours / max(bare.values()):8.2f}  (context)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("single", "bulk"))
    args = parser.parse_args()
    print(f"throughput ({machine()}), fake SES at 0 ms in its own process")
    if args.only in (None, "single"):
        single_case(args.recipients, args.rounds)
    if args.only in (None, "bulk"):
        bulk_case(args.recipients, args.rounds)


if __name__ == "__main__":
    main()
