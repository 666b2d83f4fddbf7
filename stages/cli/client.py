"""The HTTP client: one server, its credentials, and every failure said in one line.

Standard library only (urllib), synchronous: the CLI makes one request at a time. The
token or API key goes in a header and nowhere else: no message built here contains it,
and the server never echoes one (docs/api.md#authentication).

Failures map to exit codes once, here: no answer, a timeout or a 5xx is the server's
problem (1); a 4xx is a refusal of what was asked (2), with the server's own words. A
429 or 503 means nothing was done (docs/api.md#errors-and-limits), so it is retried
after `Retry-After`, a few times; a timeout is retried only for requests that are safe
to repeat (GETs, and POSTs carrying an Idempotency-Key).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final

from stages.cli.errors import ExitCode, Failure

TIMEOUT_S: Final = 60.0  # a 10,000-recipient POST answers once committed; the server gives up at 10 s
ATTEMPTS: Final = 5
MAX_RETRY_AFTER_S: Final = 30.0
RETRY_STATUSES: Final = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Credentials:
    token: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """The authentication headers; an API key is sent as X-API-KEY, a token as Bearer."""
        found: dict[str, str] = {}
        if self.token:
            found["Authorization"] = f"Bearer {self.token}"
        if self.api_key:
            found["X-API-KEY"] = self.api_key
        return found


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


def base_url(text: str) -> str:
    """The server URL without a trailing slash; Failure (usage) unless it is http(s)://host."""
    url = text.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = "such as http://localhost:3000"
        raise Failure(ExitCode.USAGE, f"--server must be an http:// or https:// URL, {example} (got {shown(url)})")
    return url


def shown(url: str) -> str:
    """The URL as it may be printed: user and password taken out."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class Transient(Exception):
    """A request that may or may not have reached the server: a timeout, a reset connection."""


class Client:
    """Requests to one ses-sender server, authenticated, answers decoded from JSON."""

    def __init__(self, server: str, credentials: Credentials, timeout_s: float = TIMEOUT_S) -> None:
        self.server = base_url(server)
        self.credentials = credentials
        self.timeout_s = timeout_s

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        """GET and the decoded body of a 2xx answer."""
        target = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        return self.request("GET", target).body

    def post(self, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        """POST a JSON body (bytes as they are, so an Idempotency-Key's body never changes)."""
        return self.request("POST", path, body, headers)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path).body

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One request, retried while the server says nothing was done; Failure otherwise."""
        headers = {**self.credentials.headers(), "Accept": "application/json", **(headers or {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        safe = method == "GET" or "Idempotency-Key" in headers
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                status, raw, retry_after = self.exchange(method, path, body, headers)
            except Transient as problem:
                if safe and not last:
                    continue
                raise Failure(ExitCode.SERVER, f"{self.where(method, path)}: {problem}") from None
            if status in RETRY_STATUSES and not last:
                time.sleep(retry_after)
                continue
            return self.answer(method, path, status, raw)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, float]:
        """(status, raw body, seconds to wait before a retry); Transient; Failure when unreachable."""
        request = urllib.request.Request(self.server + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, response.read(), 0.0
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read(), retry_after_s(error.headers.get("Retry-After"))
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise Transient(f"no answer within {self.timeout_s:g} s") from None
            raise Failure(ExitCode.SERVER, f"cannot reach {shown(self.server)}: {reason(error.reason)}") from None
        except TimeoutError:
            raise Transient(f"no answer within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as error:  # reset or closed mid-answer
            raise Transient(f"the connection failed ({reason(error)})") from None

    def answer(self, method: str, path: str, status: int, raw: bytes) -> Answer:
        """The decoded answer of a 2xx; Failure naming the server and its own error otherwise."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
            if 200 <= status < 300:
                raise Failure(
                    ExitCode.SERVER,
                    f"{self.where(method, path)} answered {status} with something that is not JSON: "
                    "is this a ses-sender server?",
                ) from None
        if 200 <= status < 300:
            return Answer(status, body)
        message = error_message(body) or "no explanation given"
        code = ExitCode.USAGE if 400 <= status < 500 and status not in (408, 429) else ExitCode.SERVER
        raise Failure(code, f"{self.where(method, path)} answered {status}: {message}")

    def where(self, method: str, path: str) -> str:
        return f"{shown(self.server)} ({method} {path.split('?')[0]})"


def error_message(body: Any) -> str | None:
    """The API's error in words: `error`, and the `field` it names (docs/api.md#errors-and-limits)."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None
    text = " ".join(body["error"].split())[:300]
    problem_field = body.get("field")
    return f"{problem_field}: {text}" if isinstance(problem_field, str) and problem_field else text


def retry_after_s(header: str | None) -> float:
    """Retry-After in seconds (the API sends whole seconds), at least 0.5 and at most 30."""
    try:
        wait = float(header) if header is not None else 1.0
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.5), MAX_RETRY_AFTER_S)


def reason(problem: object) -> str:
    """An OS error in plain words: `connection refused`, not `[Errno 111] Connection refused`."""
    if isinstance(problem, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(problem, OSError) and problem.strerror:
        return problem.strerror.lower()
    return str(problem) or type(problem).__name__


def topic_path(topic_id: str, suffix: str = "") -> str:
    """/v1/topics/{id}{suffix}, the id URL-encoded (ids may contain `/`)."""
    return f"/v1/topics/{urllib.parse.quote(topic_id, safe='')}{suffix}"
