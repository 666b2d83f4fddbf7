"""Slow clients against the real tree: how fast normal requests are answered while 500
connections trickle request heads and bodies, beside a baseline with none, in one run.

    python -m bench.slowloris [slow_connections] [seconds]

Loopback only, bounded in count and time. Prints p50/p99/max latency of GET /health and
POST /v1/messages, and how many slow connections the server had closed by the end
(HTTP_IDLE_TIMEOUT_S and HTTP_BODY_TIMEOUT_S are set to 2 s here so that shows).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from bench.common import machine, running_tree

BODY = json.dumps(
    {"messages": [{"topic_id": "bench", "emails": ["a@example.com"], "subject": "S", "content": "<p>x</p>"}]}
).encode()
POST = (
    b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)
GET = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


async def slow_client(port: int, trickle_body: bool, stop: asyncio.Event, closed: list[int]) -> None:
    """Opens a connection and sends a byte of a head (or of a body) every 0.5 s."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    head = POST[: POST.index(b"\r\n\r\n") + 4] if trickle_body else GET
    data = head + b"x" * 10_000 if trickle_body else head[:-2]
    position = len(head) if trickle_body else 0
    try:
        while not stop.is_set() and position < len(data):
            writer.write(data[position : position + 1])
            position += 1
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 0.5) == b"" or reader.at_eof():
                    closed.append(1)
                    return
            except TimeoutError:
                pass
            if writer.is_closing():
                closed.append(1)
                return
    except (ConnectionError, OSError):
        closed.append(1)
    finally:
        writer.close()


async def timed(port: int, request: bytes) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    writer.close()
    return time.perf_counter() - started


async def measure(port: int, slow: int, seconds: float) -> dict[str, object]:
    stop, closed = asyncio.Event(), []
    slowpokes = [asyncio.create_task(slow_client(port, i % 2 == 1, stop, closed)) for i in range(slow)]
    await asyncio.sleep(0.5 if slow else 0)
    latencies: dict[str, list[float]] = {"GET /health": [], "POST /v1/messages": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        latencies["GET /health"].append(await timed(port, GET))
        latencies["POST /v1/messages"].append(await timed(port, POST))
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*slowpokes, return_exceptions=True)
    return {"latencies": latencies, "closed": len(closed)}


def describe(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  max {ordered[-1] * 1000:6.1f} ms"
    )


def main(argv: list[str]) -> int:
    slow = int(argv[0]) if argv else 500
    seconds = float(argv[1]) if len(argv) > 1 else 10.0
    print(f"bench.slowloris: {machine()}; {slow} slow connections, {seconds:g} s per run")
    env = {"AUTH_DISABLED": "true", "HTTP_IDLE_TIMEOUT_S": "2", "HTTP_BODY_TIMEOUT_S": "2"}
    with running_tree(env) as tree:
        for label, count in (("baseline (no slow clients)", 0), (f"with {slow} slow clients", slow)):
            result = asyncio.run(measure(tree.port, count, seconds))
            print(f"  {label}:")
            for name, samples in result["latencies"].items():  # type: ignore[attr-defined]
                print(f"    {name:18} n={len(samples):4}  {describe(samples)}")
            if count:
                print(f"    slow connections closed by the server: {result['closed']} of {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
