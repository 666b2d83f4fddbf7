"""The ingest app (`make_app`) under pytest-aiohttp's client, in-process, on in-memory channels.

Refusals need no other stage, and the test checks they reach none: nothing refused is
ever asked of the recorder. For a POST that stores, the real recorder runs beside the
app in the same loop; where the test needs a particular answer, it plays the recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import jsonschema
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from config.settings import AuthSettings, Settings
from pipeline.channels import PendingReplies
from pipeline.db.schema import open_writer
from pipeline.memory_channels import MemoryPipeline
from pipeline.messages import EndOfStream, Message, Refusal, Refused, StoreMessages, WorkAdded
from stages.ingest import dispatch_replies
from stages.ingest.app import make_app
from tests.stage.harness import StartStage, finished

SECRET = "stage-secret-" + "s" * 40
API_KEY = "stage-api-key-" + "k" * 40
AppClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def token(secret: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "tests", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm="HS256")


def bearer(value: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {value or token()}"}


def campaign(*emails: str, topic_id: str = "t1") -> dict[str, Any]:
    return {"messages": [{"topic_id": topic_id, "emails": list(emails), "subject": "Hi", "content": "<p>Hi</p>"}]}


@dataclass
class Ingest:
    """The app's client, and the pipeline its context is wired into."""

    client: TestClient[web.Request, web.Application]
    pipeline: MemoryPipeline

    def asked_of_recorder(self) -> list[Message]:
        return self.pipeline.inboxes["recorder"].pending()


@pytest.fixture
async def ingest(settings: Settings, aiohttp_client: AppClient) -> AsyncIterator[Ingest]:
    # The recorder's migration makes the file; ingest only ever opens it read-only.
    open_writer(settings.database_path).close()
    pipeline = MemoryPipeline(replace(settings, auth=AuthSettings(jwt_secret=SECRET, api_key=API_KEY)))
    ctx = pipeline.context("ingest")
    replies: PendingReplies[Message] = PendingReplies()
    client = await aiohttp_client(make_app(ctx, replies))
    # What the stage's run() does beside the app: hand each reply to the request waiting for it.
    dispatcher = asyncio.create_task(dispatch_replies(ctx, replies))
    yield Ingest(client, pipeline)
    dispatcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dispatcher


async def test_health_is_public(ingest: Ingest) -> None:
    response = await ingest.client.get("/health")
    assert response.status == 200 and await response.json() == {"status": "ok"}


REFUSED = {
    "no credentials": {},
    "not bearer": {"Authorization": f"Basic {token()}"},
    "garbage token": {"Authorization": "Bearer not.a.token"},
    "wrong secret": bearer(token(secret="another-secret-" + "z" * 40)),
    "expired": bearer(token(exp=int(time.time()) - 120)),
    "no expiry": bearer(token(exp=None)),
    "wrong api key": {"X-API-KEY": "nope-" + "n" * 40},
    "blank api key": {"X-API-KEY": "   "},
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_without_a_valid_credential_a_post_gets_401_and_asks_nothing(ingest: Ingest, case: str) -> None:
    response = await ingest.client.post("/v1/messages", json=campaign("a@example.org"), headers=REFUSED[case])
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    answer = await response.json()
    assert answer["code"] == "unauthorized" and answer["error"]
    assert ingest.asked_of_recorder() == []


async def test_the_messages_of_a_refused_token_say_what_to_fix(ingest: Ingest) -> None:
    expired = await ingest.client.get("/v1/topics", headers=REFUSED["expired"])
    assert "expired" in (await expired.json())["error"]
    no_expiry = await ingest.client.get("/v1/topics", headers=REFUSED["no expiry"])
    assert "exp" in (await no_expiry.json())["error"]


@pytest.mark.parametrize("credential", ["bearer", "api-key"])
async def test_a_valid_token_or_api_key_is_let_in(ingest: Ingest, credential: str) -> None:
    headers = bearer() if credential == "bearer" else {"X-API-KEY": API_KEY}
    response = await ingest.client.get("/v1/topics", headers=headers)
    assert response.status == 200
    assert (await response.json())["topics"] == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None], ids=["text", "form", "none"]
)
async def test_a_body_that_is_not_json_gets_415_and_asks_nothing(ingest: Ingest, content_type: str | None) -> None:
    body = json.dumps(campaign("a@example.org")).encode()
    headers = bearer() | ({"Content-Type": content_type} if content_type else {})
    skip = () if content_type else ("Content-Type",)
    response = await ingest.client.post("/v1/messages", data=body, headers=headers, skip_auto_headers=skip)
    assert response.status == 415
    answer = await response.json()
    assert (answer["code"], answer["field"]) == ("unsupported_media_type", "Content-Type")
    assert ingest.asked_of_recorder() == []


def with_message(**fields: Any) -> dict[str, Any]:
    body = campaign("a@example.org")
    body["messages"][0].update(fields)
    return body


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        pytest.param({}, "invalid_field", "messages", id="missing-messages"),
        pytest.param(with_message(subject=7), "invalid_field", "messages[0].subject", id="subject-not-a-string"),
        pytest.param(with_message(subject="Hi\r\nBcc: x@y.z"), "invalid_field", "messages[0].subject", id="crlf"),
        pytest.param(with_message(emails="a@b.co"), "invalid_field", "messages[0].emails", id="emails-not-a-list"),
        pytest.param(with_message(emails=[1]), "invalid_field", "messages[0].emails[0]", id="email-not-a-string"),
        pytest.param({**campaign("a@example.org"), "scheduled_at": "soon"}, "invalid_field", "scheduled_at", id="when"),
    ],
)
async def test_a_bad_body_gets_400_naming_the_field_and_asks_nothing(
    ingest: Ingest, body: dict[str, Any], code: str, field: str
) -> None:
    response = await ingest.client.post("/v1/messages", json=body, headers=bearer())
    assert response.status == 400
    answer = await response.json()
    assert (answer["code"], answer.get("field")) == (code, field)
    assert isinstance(answer["error"], str) and answer["error"]
    assert ingest.asked_of_recorder() == []


async def test_json_that_does_not_parse_gets_400(ingest: Ingest) -> None:
    headers = bearer() | {"Content-Type": "application/json"}
    response = await ingest.client.post("/v1/messages", data=b'{"messages": [', headers=headers)
    assert response.status == 400 and (await response.json())["code"] == "invalid_json"


async def test_unknown_routes_and_methods_answer_in_the_error_shape(ingest: Ingest) -> None:
    missing = await ingest.client.get("/v1/nope")
    assert missing.status == 404 and (await missing.json())["code"] == "not_found"
    wrong = await ingest.client.put("/v1/messages", json={}, headers=bearer())
    assert wrong.status == 405 and (await wrong.json())["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]
    topic = await ingest.client.put("/v1/topics/t1", json={})
    assert topic.status == 405 and {"GET", "DELETE"} <= set(topic.headers["Allow"].split(","))


async def test_the_contract_is_valid_openapi_and_describes_the_errors_given(ingest: Ingest) -> None:
    response = await ingest.client.get("/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    document = await response.json()
    validate(document)  # raises on any violation of OpenAPI 3.1
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert {"200", "400", "401", "415"} <= set(document["paths"]["/v1/messages"]["post"]["responses"])
    # A refusal the app gives matches the error schema the document publishes
    refusal = await (await ingest.client.post("/v1/messages", json=campaign("a@example.org"))).json()
    schema = {"$ref": "#/components/schemas/ErrorAnswer", "components": document["components"]}
    jsonschema.validate(refusal, schema, cls=jsonschema.Draft202012Validator)


async def test_a_post_is_answered_once_stored_and_wakes_the_scheduler(ingest: Ingest, start: StartStage) -> None:
    recorder = start(ingest.pipeline, "recorder")
    response = await ingest.client.post(
        "/v1/messages", json=campaign("a@example.org", "b@example.org"), headers=bearer()
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["success"] == 2
    woken = await ingest.pipeline.next_for("scheduler")
    assert isinstance(woken, WorkAdded)
    # What was accepted is in the database the app reads
    topic = await (await ingest.client.get("/v1/topics/t1", headers=bearer())).json()
    assert topic["pending"] == 2
    ingest.pipeline.tell("recorder", *(EndOfStream(name) for name in ("ingest", "scheduler", "sender")))
    await finished(recorder)


async def test_a_store_the_recorder_could_not_commit_gets_503_and_wakes_nobody(ingest: Ingest) -> None:
    async def play_the_recorder() -> None:
        asked = await ingest.pipeline.next_for("recorder")
        assert isinstance(asked, StoreMessages)
        ingest.pipeline.tell("ingest", Refused(asked.corr_id, Refusal.STORAGE_UNAVAILABLE, "the disk is full"))

    recorder = asyncio.create_task(play_the_recorder())
    response = await ingest.client.post("/v1/messages", json=campaign("a@example.org"), headers=bearer())
    await finished(recorder)
    assert response.status == 503 and response.headers["Retry-After"]
    assert (await response.json())["code"] == "storage_unavailable"
    assert ingest.pipeline.inboxes["scheduler"].pending() == []
