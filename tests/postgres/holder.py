"""A process that takes the sender lock, says so on stdout, and holds it until it is killed."""

from __future__ import annotations

import asyncio
import sys

from pipeline.db.leadership import SenderLock


async def hold(url: str, node: str) -> None:
    lock = SenderLock(url, node, failover_s=1.0)
    await lock.acquire()
    print("held", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2]))
