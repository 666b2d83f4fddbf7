"""Events: pixel requests/s against the real tree beside a bare aiohttp app serving the
same image (in the same run), signed SNS notifications/s end to end with nothing lost,
and the statistics query for a topic of 1,000,000 recipients.

    python -m bench.events [--seconds 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bench.common import machine
from pipeline.db.schema import open_writer
from tests.fakes.fake_sns import FakeSns, ses_event, sns_env
from tests.helpers import ROOT, Tree, campaign, free_port, wait_until

BARE_APP = """
import sys
from aiohttp import web
from stages.ingest.events import PIXEL, PIXEL_HEADERS
async def pixel(request):
    return web.Response(body=PIXEL, content_type="image/png", headers=PIXEL_HEADERS)
app = web.Application()
app.router.add_get("/v1/events/open", pixel)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("PIXEL_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


def load(urls: list[str], seconds: float, concurrency: int) -> float:
    """Requests/s: wrk when installed (a C load generator leaves the CPU to the servers), else aiohttp."""
    if shutil.which("wrk") is None:
        return asyncio.run(hammer(urls, seconds, concurrency))
    with tempfile.TemporaryDirectory() as folder:
        paths, script = Path(folder) / "paths.txt", Path(folder) / "rotate.lua"
        paths.write_text("\n".join(f"{urlsplit(url).path}?{urlsplit(url).query}" for url in urls))
        script.write_text(WRK_SCRIPT)
        base = urls[0].split("/v1/", 1)[0]
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(script), base]
        output = subprocess.run(command, capture_output=True, text=True, check=True, env={"PIXEL_PATHS": str(paths)})
    assert "Non-2xx" not in output.stdout, output.stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output.stdout).group(1))  # type: ignore[union-attr]


async def hammer(urls: list[str], seconds: float, concurrency: int) -> float:
    """GET the URLs round-robin from `concurrency` connections for `seconds`; requests/s."""
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal done
            index = offset
            while time.perf_counter() < deadline:
                async with session.get(urls[index % len(urls)]) as response:
                    await response.read()
                    assert response.status == 200
                done += 1
                index += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return done / (time.perf_counter() - started)


def pixel_urls(tree: Tree, count: int) -> list[str]:
    emails = [f"u{i}@example.com" for i in range(count)]
    assert tree.post("/v1/messages", campaign(emails, topic_id="pixel"))[0] == 200
    wait_until(lambda: tree.statuses().get("sent") == count, 60, "the pixel campaign", every_s=0.5)
    from pipeline import tracking
    from pipeline.db.schema import tracking_key

    with tree.db() as conn:
        key = tracking_key(conn)
        ids = [r[0] for r in conn.execute("SELECT id FROM recipients WHERE topic_id = 'pixel'")]
    return [tracking.pixel_url(tree.base, key, i) for i in ids]


def pixel_bench(seconds: float, concurrency: int) -> None:
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)], cwd=ROOT)
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True, 20, "the bare app")
        bare_rate = load([f"http://127.0.0.1:{port}/v1/events/open?request_id=1"], seconds, concurrency)
    finally:
        bare.terminate()
        bare.wait(10)
    with tempfile.TemporaryDirectory() as folder:
        tree = Tree(Path(folder), {"LOG_LEVEL": "WARNING", "MAX_SEND_PER_SECOND": "5000"}).start()
        try:
            urls = pixel_urls(tree, 2000)
            ours = load(urls, seconds, concurrency)
            topic = tree.get("/v1/topics/pixel")[1]
        finally:
            tree.stop()
    generator = "wrk" if shutil.which("wrk") else "aiohttp (install wrk for a lighter load generator)"
    print(f"  pixel, {concurrency} connections, {seconds:g} s each, load from {generator}:")
    print(f"    bare aiohttp app, same image:     {bare_rate:8.0f} requests/s")
    print(f"    the tree, every open recorded:    {ours:8.0f} requests/s   ratio {ours / bare_rate:.2f} (aim >= 0.8)")
    print(f"    opens recorded: {topic['opens']:,} (unique {topic['opened']:,})")


def sns_bench(count: int, concurrency: int) -> None:
    fake = FakeSns().start()
    with tempfile.TemporaryDirectory() as folder:
        tree = Tree(Path(folder), sns_env(LOG_LEVEL="WARNING")).start()
        try:
            bodies = [
                json.dumps(fake.notification(ses_event("Delivery", f"m{i}", f"u{i}@example.com"))).encode()
                for i in range(count)
            ]
            rate = asyncio.run(post_all(tree.base + "/v1/events/results", bodies, concurrency))
            with tree.db() as conn:
                recorded = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            tree.stop()
            fake.stop()
    print(
        f"  signed SNS notifications (v2, {concurrency} connections): {rate:8.0f}/s, {recorded:,} of {count:,} recorded"
    )


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> float:
    headers = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain; charset=UTF-8"}
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while queue:
                async with session.post(url, data=queue.pop(), headers=headers) as response:
                    assert response.status == 200, await response.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


def stats_bench(recipients: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "test.db"
        conn = open_writer(path)
        conn.execute("BEGIN")
        content = conn.execute("INSERT INTO contents (subject, html, created_at_ms) VALUES ('s', 'h', 0)").lastrowid
        conn.executemany(
            "INSERT INTO recipients (content_id, topic_id, email, status, due_at_ms, created_at_ms, sent_at_ms,"
            " delivery, open_count) VALUES (?, 'million', ?, 'sent', 0, 0, ?, ?, ?)",
            (
                (content, f"u{i}@example.com", i, ("delivered", "bounced", None)[i % 3], i % 4)
                for i in range(recipients)
            ),
        )
        conn.execute("INSERT INTO topics VALUES ('million', 0, 0, ?)", (recipients,))
        # Rows put straight into the table: count them as the recorder would.
        conn.execute("INSERT INTO topic_counts VALUES ('million', 'sent', ?)", (recipients,))
        conn.execute("COMMIT")
        conn.close()
        tree = Tree(Path(folder), {"LOG_LEVEL": "WARNING"}).start()
        try:
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                status, body, _ = tree.get("/v1/topics/million")
                timings.append(time.perf_counter() - started)
                assert status == 200 and body["total"] == recipients
        finally:
            tree.stop()
    print(
        f"  GET /v1/topics/{{id}} for {recipients:,} recipients: median {statistics.median(timings) * 1000:.0f} ms"
        f" (min {min(timings) * 1000:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--notifications", type=int, default=3000)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("pixel", "sns", "stats"))
    args = parser.parse_args()
    print(f"events ({machine()}):")
    if args.only in (None, "pixel"):
        pixel_bench(args.seconds, args.concurrency)
    if args.only in (None, "sns"):
        sns_bench(args.notifications, args.concurrency)
    if args.only in (None, "stats"):
        stats_bench(args.recipients)


if __name__ == "__main__":
    main()
