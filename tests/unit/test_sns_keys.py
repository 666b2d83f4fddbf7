"""Fetching SNS signing certificates over real HTTP on 127.0.0.1: an outage answers 503 (SNS
retries a 5xx, not a 4xx), one fetch at a time per URL, failures remembered briefly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from stages.ingest.errors import ApiError
from stages.ingest.sns import FAILURE_MEMORY_S, MAX_CERT_BYTES, SigningKeys
from tests.fakes.fake_sns import make_certificate

PEM = make_certificate(rsa.generate_private_key(65537, 2048))


class CertHost:
    """A certificate host whose behaviour the test sets: ok, slow, failing, chunked, huge."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.mode == "error":
            return web.Response(status=500)
        if self.mode == "slow":
            await asyncio.sleep(2)
        if self.mode == "huge":
            return web.Response(body=b"x" * (MAX_CERT_BYTES + 1))
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(PEM), 100):  # the body arrives in many pieces
            await response.write(PEM[start : start + 100])
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response


@pytest.fixture
async def host() -> AsyncIterator[tuple[CertHost, str]]:
    cert_host = CertHost()
    app = web.Application()
    app.router.add_get("/{name}", cert_host.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield cert_host, f"http://127.0.0.1:{port}/SimpleNotificationService-ab.pem"
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def status_of(keys: SigningKeys, url: str) -> int:
    try:
        await keys.key_for(url)
    except ApiError as problem:
        return problem.status
    return 200


async def test_a_certificate_in_many_pieces_is_read_whole_and_fetched_once(host: tuple[CertHost, str]) -> None:
    cert_host, url = host
    async with aiohttp.ClientSession() as session:
        keys = SigningKeys(session)
        found = await asyncio.gather(*(keys.key_for(url) for _ in range(20)))
    assert len({id(key) for key in found}) == 1 and cert_host.hits == 1, "one fetch for twenty events"


@pytest.mark.parametrize("mode", ["error", "slow"])
async def test_an_outage_answers_503_and_is_remembered_for_a_few_seconds(host: tuple[CertHost, str], mode: str) -> None:
    cert_host, url = host
    cert_host.mode = mode
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        keys = SigningKeys(session, clock=clock, timeout_s=0.3)
        assert await status_of(keys, url) == 503
        assert await status_of(keys, url) == 503
        assert cert_host.hits == 1, "a burst during an outage costs one fetch"
        cert_host.mode = "ok"
        clock.now += FAILURE_MEMORY_S + 0.1
        assert await status_of(keys, url) == 200


async def test_an_unreachable_host_is_503_and_an_oversized_body_403(host: tuple[CertHost, str]) -> None:
    cert_host, url = host
    async with aiohttp.ClientSession() as session:
        assert await status_of(SigningKeys(session), "http://127.0.0.1:1/SimpleNotificationService-ab.pem") == 503
        cert_host.mode = "huge"
        assert await status_of(SigningKeys(session), url) == 403
