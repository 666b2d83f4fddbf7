"""The one typed, frozen settings object, read once from the environment.

Only the supervisor calls `load()`; every stage receives the result at spawn and
never reads `os.environ` itself (aiobotocore still reads the standard AWS
variables, which we deliberately do not re-implement).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

from pipeline.unsubscribe import DEFAULT_HTML_FOOTER

EmailBackend = Literal["ses", "outbox"]
LOG_LEVELS: Final = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# The standard AWS chain finds credentials in any of these; `auto` treats them as "an account".
AWS_CREDENTIAL_HINTS: Final = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)
SES_STARTING_RATE_PER_S: Final = 14.0


class ConfigError(Exception):
    """Every problem found in the environment, one `NAME: problem` per entry."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How the supervisor brings dead stages back (see STYLE.md, "The supervisor")."""

    min_delay_s: float = 0.5
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0
    max_restarts: int = 5
    window_s: float = 120.0
    boot_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SesSettings:
    """Where and how mail leaves: SES v2, or the local outbox folder."""

    backend: EmailBackend = "outbox"
    backend_reason: str = "default"
    region: str | None = None
    from_email: str | None = None
    configuration_set: str | None = None
    outbox_dir: Path = Path("outbox")
    # None: use SES's own MaxSendRate (or SES's starting rate for the outbox).
    max_send_per_s: float | None = None
    # The cap on concurrent SES calls; the sender derives its own limit from the rate below it.
    max_in_flight: int = 256
    # How often the sender re-reads the 24-hour quota from GetAccount.
    quota_refresh_s: float = 60.0
    # SES_BULK: up to 50 recipients per SendBulkEmail call; false sends one SendEmail each.
    bulk: bool = True


@dataclass(frozen=True, slots=True)
class SnsSettings:
    """Who may post SES events to the webhook, and how their signatures are checked."""

    # Empty: the webhook refuses every notification (403) unless allow_any_topic says otherwise.
    topic_arns: tuple[str, ...] = ()
    # SNS_ALLOW_ANY_TOPIC=true: the explicit opt-out, warned about at every start.
    allow_any_topic: bool = False
    # None: the certificate must be on sns.<the topic's region>.amazonaws.com(.cn). A pattern
    # (SNS_CERT_HOST_PATTERN) replaces that host rule, region included.
    cert_host_pattern: str | None = None
    # Tests only: certificates and SubscribeURLs over plain http on an allowed host.
    cert_allow_http: bool = False
    auto_confirm: bool = True


@dataclass(frozen=True, slots=True)
class ListSettings:
    """What bulk mail carries so that Gmail and Yahoo accept it: one-click unsubscribe
    (RFC 8058), a visible link, and the name on the unsubscribe pages."""

    org_name: str = "ses-sender"
    # UNSUBSCRIBE_MAILTO: a mailto: alternative in List-Unsubscribe.
    mailto: str | None = None
    # The HTML footer added when the content places no {{unsubscribe_url}}; None: off.
    footer: str | None = DEFAULT_HTML_FOOTER


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """The reputation guard: pause a topic (or all sending) before SES reviews the account
    (5% bounces, 0.1% complaints)."""

    bounce_rate: float = 0.04
    complaint_rate: float = 0.0008
    min_sent: int = 200


MIN_SECRET_CHARS: Final = 32
ALL_INTERFACES: Final = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may call the API: a JWT signed with the secret (HS256), or the API key."""

    jwt_secret: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 30.0
    # Tokens without `exp` are refused unless JWT_REQUIRE_EXP=false.
    require_exp: bool = True
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the product can be told, validated; secrets never appear in repr."""

    server_url: str = "http://localhost:3000"
    server_host: str = ALL_INTERFACES
    # Why server_host is what it is (said at start): "SERVER_HOST", or loopback because auth is off.
    server_host_reason: str = "default"
    server_port: int = 3000
    database_path: Path = Path("sqlite3.db")
    # DATABASE_URL=postgresql://…: the shared store of several nodes (docs/postgresql.md); it may
    # hold a password, so it never appears in repr. None: the SQLite file at database_path.
    postgres_url: str | None = field(default=None, repr=False)
    # With PostgreSQL: this node's name (who sends is said by it), and how soon a standby
    # takes over sending after the sending node dies.
    node_name: str = ""
    # How the other nodes reach this node's API (a hold is carried to the sending node).
    node_url: str = ""
    failover_s: float = 5.0
    auth: AuthSettings = field(default_factory=AuthSettings)
    sentry_dsn: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    # LOG_FORMAT: "text" (one readable line per record) or "json" (one JSON object per line).
    log_format: str = "text"
    max_emails_per_request: int = 10_000
    max_request_bytes: int = 20 * 1024 * 1024
    # Requests per second per API client (token subject, API key or address); 0: no limit.
    api_rate_per_s: float = 0.0
    # How many requests a client may make at once before the rate applies.
    api_rate_burst: int = 0
    # The zone of `scheduled_at` values written without an offset (IANA name).
    timezone: str = "UTC"
    schedule_horizon_days: int = 366
    shutdown_timeout_s: float = 4.5
    # A connection that sends no complete request head this long after it opened, or after
    # its last answer, is closed: one timer bounds idle keep-alives and heads sent slowly.
    http_idle_timeout_s: float = 75.0
    # The whole request body must arrive within this (408 otherwise).
    http_body_timeout_s: float = 60.0
    ses: SesSettings = field(default_factory=SesSettings)
    sns: SnsSettings = field(default_factory=SnsSettings)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    lists: ListSettings = field(default_factory=ListSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    # TRACK_CLICKS: rewrite links for click counts in messages that do not say `track_clicks`.
    track_clicks: bool = False
    # METRICS_PUBLIC: GET /metrics without authentication (a scraper on a private network).
    metrics_public: bool = False

    @property
    def server_url_is_local(self) -> bool:
        """True when recipients' mail clients could not reach SERVER_URL (the pixel)."""
        host = urlsplit(self.server_url).hostname or ""
        return host in ("localhost", "::1") or host.startswith("127.")


T = TypeVar("T")


class _Reader:
    """Collects problems instead of stopping at the first one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def parse(self, name: str, default: T, convert: Callable[[str], T], what: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError:
            self.problems.append(f"{name}: {value!r} is not {what}")
            return default

    def number(self, name: str, default: float, *, minimum: float, strict: bool = True) -> float:
        value = self.parse(name, default, float, "a number")
        low_ok = value > minimum if strict else value >= minimum
        if not math.isfinite(value) or not low_ok:
            self.problems.append(f"{name}: must be {'>' if strict else '>='} {minimum:g}, got {value:g}")
            return default
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.parse(name, default, int, "a whole number")
        if not low <= value <= high:
            self.problems.append(f"{name}: must be between {low} and {high}, got {value}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name}: {value!r} is not true or false")
        return default

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in allowed:
            self.problems.append(f"{name}: {value!r} is not one of {', '.join(allowed)}")
            return default
        return value.lower()


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# PostgreSQL keeps 63 bytes of an application_name, which names the sending node.
NODE_NAME_CHARS = 40


def parse_database_url(url: str) -> Path:
    """`sqlite://relative.db` or `sqlite:///abs/path.db` to a path; anything else is refused."""
    if not url.startswith("sqlite://"):
        raise ValueError("must start with sqlite:// or postgresql://")
    path = url.removeprefix("sqlite://")
    if path in ("", "/", ":memory:"):
        raise ValueError("must name a database file (several processes share it)")
    return Path(path)


def _server_url(reader: _Reader, default: str) -> str:
    url = reader.raw("SERVER_URL") or default
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.problems.append(f"SERVER_URL: {url!r} is not an http(s) URL")
        return default
    return url.rstrip("/")


def _database_path(reader: _Reader, default: Path) -> Path:
    url = reader.raw("DATABASE_URL")
    if url is None or url.startswith(POSTGRES_SCHEMES):
        return default
    try:
        return parse_database_url(url)
    except ValueError as problem:
        reader.problems.append(f"DATABASE_URL: {problem}")
        return default


def _node_name(reader: _Reader, port: int) -> str:
    """NODE_NAME, else host:port, which tells nodes apart on one machine as on many."""
    name = reader.raw("NODE_NAME") or f"{socket.gethostname()}:{port}"
    if len(name) > NODE_NAME_CHARS or not name.isprintable():
        reader.problems.append(f"NODE_NAME: at most {NODE_NAME_CHARS} printable characters")
        return name[:NODE_NAME_CHARS]
    return name


def _node_url(reader: _Reader, host: str, port: int) -> str:
    """NODE_URL, else this host's own address and port (the host name when serving every interface)."""
    reachable = socket.gethostname() if host in (ALL_INTERFACES, "::", "") else host
    url = reader.raw("NODE_URL") or f"http://{reachable}:{port}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.problems.append(f"NODE_URL: {url!r} is not an http(s) URL")
    return url.rstrip("/")


def _postgres_url(reader: _Reader) -> str | None:
    """DATABASE_URL when it names PostgreSQL; a URL without a host or database is refused (never echoed)."""
    url = reader.raw("DATABASE_URL")
    if url is None or not url.startswith(POSTGRES_SCHEMES):
        return None
    parts = urlsplit(url)
    if not parts.hostname or parts.path in ("", "/"):
        reader.problems.append("DATABASE_URL: a postgresql:// URL must name a host and a database")
        return None
    return url


def _log_level(reader: _Reader) -> str:
    level = (reader.raw("LOG_LEVEL") or "INFO").upper()
    if level not in LOG_LEVELS:
        reader.problems.append(f"LOG_LEVEL: {level!r} is not one of {', '.join(LOG_LEVELS)}")
        return "INFO"
    return level


def _timezone(reader: _Reader) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = reader.raw("TIMEZONE") or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        reader.problems.append(f"TIMEZONE: {name!r} is not an IANA time zone name (e.g. Asia/Seoul)")
        return "UTC"
    return name


def _backend(reader: _Reader, from_email: str | None) -> tuple[EmailBackend, str]:
    """Resolve EMAIL_BACKEND, including `auto`, and say why."""
    choice = (reader.raw("EMAIL_BACKEND") or "auto").lower()
    has_credentials = any(reader.raw(name) for name in AWS_CREDENTIAL_HINTS)
    if choice == "auto":
        if has_credentials and from_email:
            return "ses", "auto: AWS credentials and AWS_SES_FROM_EMAIL are set"
        return "outbox", "auto: no AWS credentials or no AWS_SES_FROM_EMAIL, writing .eml files"
    if choice == "ses":
        if not from_email:
            reader.problems.append("EMAIL_BACKEND: ses needs AWS_SES_FROM_EMAIL (the verified sender)")
        return "ses", "EMAIL_BACKEND=ses"
    if choice == "outbox":
        return "outbox", "EMAIL_BACKEND=outbox"
    reader.problems.append(f"EMAIL_BACKEND: {choice!r} is not one of ses, outbox, auto")
    return "outbox", "invalid"


def _from_email(reader: _Reader) -> str | None:
    """The sender, `addr` or `Name <addr>`, checked so a typo fails at start, not per send."""
    from email.utils import parseaddr

    from email_validator import EmailNotValidError, validate_email

    value = reader.raw("AWS_SES_FROM_EMAIL")
    if value is None:
        return None
    _, address = parseaddr(value)
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as problem:
        reader.problems.append(f"AWS_SES_FROM_EMAIL: {value!r} is not a usable address ({problem})")
        return None
    return value


def _ses(reader: _Reader) -> SesSettings:
    defaults = SesSettings()
    from_email = _from_email(reader)
    backend, reason = _backend(reader, from_email)
    rate: float | None = None
    if reader.raw("MAX_SEND_PER_SECOND") is not None:
        rate = reader.number("MAX_SEND_PER_SECOND", SES_STARTING_RATE_PER_S, minimum=0)
    return SesSettings(
        backend=backend,
        backend_reason=reason,
        region=reader.raw("AWS_REGION") or reader.raw("AWS_DEFAULT_REGION"),
        from_email=from_email,
        configuration_set=reader.raw("AWS_SES_CONFIGURATION_SET"),
        outbox_dir=Path(reader.raw("OUTBOX_DIR") or defaults.outbox_dir),
        max_send_per_s=rate,
        max_in_flight=reader.integer("SES_MAX_IN_FLIGHT", defaults.max_in_flight, low=1, high=1024),
        quota_refresh_s=reader.number("SES_QUOTA_REFRESH_S", defaults.quota_refresh_s, minimum=0),
        bulk=reader.flag("SES_BULK", defaults.bulk),
    )


def _auth(reader: _Reader) -> AuthSettings:
    """A JWT_SECRET or an API_KEY protects the API; AUTH_DISABLED=true opens only a server with neither.

    The original server's operators set only API_KEY: that alone starts a protected server.
    """
    secret, api_key = reader.raw("JWT_SECRET"), reader.raw("API_KEY")
    disabled = reader.flag("AUTH_DISABLED", False)
    if secret is None and api_key is None and not disabled:
        reader.problems.append(
            "JWT_SECRET: required to protect the API with Bearer tokens, or API_KEY alone for X-API-KEY;"
            " AUTH_DISABLED=true runs it without authentication, on 127.0.0.1 only"
        )
    for name, value in (("JWT_SECRET", secret), ("API_KEY", api_key)):
        if value is not None and len(value) < MIN_SECRET_CHARS:
            reader.problems.append(f"{name}: must be at least {MIN_SECRET_CHARS} characters (openssl rand -hex 32)")
    return AuthSettings(
        jwt_secret=secret,
        api_key=api_key,
        audience=reader.raw("JWT_AUDIENCE"),
        issuer=reader.raw("JWT_ISSUER"),
        leeway_s=reader.number("JWT_LEEWAY_S", 30.0, minimum=0, strict=False),
        require_exp=reader.flag("JWT_REQUIRE_EXP", True),
        # A secret or a key always protects the API: AUTH_DISABLED only opens a server that has neither.
        disabled=disabled and secret is None and api_key is None,
    )


def _sns(reader: _Reader) -> SnsSettings:
    import re

    pattern = reader.raw("SNS_CERT_HOST_PATTERN")
    try:
        re.compile(pattern or "")
    except re.error as problem:
        reader.problems.append(f"SNS_CERT_HOST_PATTERN: not a regular expression ({problem})")
        pattern = None
    arns = tuple(a.strip() for a in (reader.raw("SNS_TOPIC_ARNS") or "").split(",") if a.strip())
    bad = [a for a in arns if not a.startswith("arn:aws")]
    if bad:
        reader.problems.append(f"SNS_TOPIC_ARNS: {bad[0]!r} is not a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return SnsSettings(
        topic_arns=arns,
        allow_any_topic=reader.flag("SNS_ALLOW_ANY_TOPIC", False),
        cert_host_pattern=pattern,
        cert_allow_http=reader.flag("SNS_CERT_ALLOW_HTTP", False),
        auto_confirm=reader.flag("SNS_AUTO_CONFIRM", True),
    )


def _lists(reader: _Reader, server_url: str) -> ListSettings:
    from pipeline.unsubscribe import footer_setting, settings_problems

    mailto = reader.raw("UNSUBSCRIBE_MAILTO")
    problems = settings_problems(server_url, mailto)
    reader.problems.extend(problems)
    try:
        footer = footer_setting(reader.raw("UNSUBSCRIBE_FOOTER"))
    except ValueError as problem:
        reader.problems.append(f"UNSUBSCRIBE_FOOTER: {problem}")
        footer = DEFAULT_HTML_FOOTER
    return ListSettings(
        org_name=reader.raw("ORG_NAME") or ListSettings().org_name,
        mailto=None if any(p.startswith("UNSUBSCRIBE_MAILTO") for p in problems) else mailto,
        footer=footer,
    )


def _guard(reader: _Reader) -> GuardSettings:
    defaults = GuardSettings()
    return GuardSettings(
        bounce_rate=_rate(reader, "GUARD_BOUNCE_RATE", defaults.bounce_rate),
        complaint_rate=_rate(reader, "GUARD_COMPLAINT_RATE", defaults.complaint_rate),
        min_sent=reader.integer("GUARD_MIN_SENT", defaults.min_sent, low=1, high=1_000_000_000),
    )


def _rate(reader: _Reader, name: str, default: float) -> float:
    value = reader.number(name, default, minimum=0, strict=False)
    if value > 1:
        reader.problems.append(f"{name}: a rate between 0 and 1 (0.04 is 4%), got {value:g}")
        return default
    return value


def _server_host(reader: _Reader, auth: AuthSettings) -> tuple[str, str]:
    """SERVER_HOST when set; else every interface, or loopback only while the API is open."""
    host = reader.raw("SERVER_HOST")
    if host is not None:
        return host, "SERVER_HOST"
    if auth.disabled:
        return "127.0.0.1", "authentication is off, so only this machine may connect (set SERVER_HOST to change)"
    return ALL_INTERFACES, "default"


def load(environ: Mapping[str, str]) -> Settings:
    """Read and validate every setting at once; raise ConfigError listing each problem."""
    reader = _Reader(environ)
    defaults = Settings()
    # Platforms (Heroku, Dokku, honcho) hand the port over as $PORT; it wins over SERVER_PORT.
    port_name = "PORT" if reader.raw("PORT") is not None else "SERVER_PORT"
    port = reader.integer(port_name, defaults.server_port, low=0, high=65535)
    auth = _auth(reader)
    host, host_reason = _server_host(reader, auth)
    # The pixel and the unsubscribe link must reach this server: without SERVER_URL it follows the port.
    server_url = _server_url(reader, f"http://localhost:{port or defaults.server_port}")
    settings = Settings(
        server_url=server_url,
        server_host=host,
        server_host_reason=host_reason,
        server_port=port,
        database_path=_database_path(reader, defaults.database_path),
        postgres_url=_postgres_url(reader),
        node_name=_node_name(reader, port),
        node_url=_node_url(reader, host, port),
        failover_s=reader.number("FAILOVER_S", defaults.failover_s, minimum=0.5),
        auth=auth,
        sentry_dsn=reader.raw("SENTRY_DSN"),
        log_level=_log_level(reader),
        log_format=reader.choice("LOG_FORMAT", ("text", "json"), "text"),
        max_emails_per_request=reader.integer(
            "MAX_EMAILS_PER_REQUEST", defaults.max_emails_per_request, low=1, high=1_000_000
        ),
        max_request_bytes=reader.integer("MAX_REQUEST_BYTES", defaults.max_request_bytes, low=1024, high=1024**3),
        api_rate_per_s=(api_rate := reader.number("API_RATE_LIMIT", 0.0, minimum=0, strict=False)),
        api_rate_burst=reader.integer("API_RATE_BURST", max(1, math.ceil(api_rate)), low=1, high=1_000_000),
        timezone=_timezone(reader),
        schedule_horizon_days=reader.integer("SCHEDULE_HORIZON_DAYS", 366, low=1, high=3660),
        shutdown_timeout_s=reader.number("SHUTDOWN_TIMEOUT_S", defaults.shutdown_timeout_s, minimum=0),
        http_idle_timeout_s=reader.number("HTTP_IDLE_TIMEOUT_S", defaults.http_idle_timeout_s, minimum=0),
        http_body_timeout_s=reader.number("HTTP_BODY_TIMEOUT_S", defaults.http_body_timeout_s, minimum=0),
        ses=_ses(reader),
        sns=_sns(reader),
        restart=RestartPolicy(
            min_delay_s=reader.number("RESTART_MIN_DELAY_S", 0.5, minimum=0),
            max_delay_s=reader.number("RESTART_MAX_DELAY_S", 30.0, minimum=0),
            healthy_after_s=reader.number("RESTART_HEALTHY_AFTER_S", 60.0, minimum=0),
            max_restarts=reader.integer("RESTART_MAX_IN_WINDOW", 5, low=0, high=1000),
            window_s=reader.number("RESTART_WINDOW_S", 120.0, minimum=0),
        ),
        lists=_lists(reader, server_url),
        guard=_guard(reader),
        track_clicks=reader.flag("TRACK_CLICKS", False),
        metrics_public=reader.flag("METRICS_PUBLIC", False),
    )
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def load_from_process() -> Settings:
    """The supervisor's entry: `.env` in the working directory fills what the environment lacks.

    The values are exported into os.environ so that aiobotocore in the children sees
    AWS_* variables that were only written in `.env`.
    """
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    return load(os.environ)
