"""Settings: defaults, every variable, and one clear problem per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, parse_database_url
from config.settings import load as load_strict


def load(environ: dict[str, str]):  # type: ignore[no-untyped-def]
    """Most tests are not about auth: run open unless they say otherwise."""
    return load_strict({"AUTH_DISABLED": "true", **environ})


def test_defaults_need_nothing() -> None:
    settings = load({})
    assert settings.server_port == 3000
    assert settings.server_url == "http://localhost:3000"
    assert settings.database_path == Path("sqlite3.db")
    assert settings.ses.backend == "outbox"
    assert settings.ses.max_send_per_s is None
    assert settings.timezone == "UTC"
    assert settings.max_emails_per_request == 10_000


def test_every_variable_is_read() -> None:
    settings = load(
        {
            "SERVER_URL": "https://mail.example.com/",
            "SERVER_PORT": "8080",
            "DATABASE_URL": "sqlite:///var/lib/ses/db.sqlite",
            "JWT_SECRET": "s3cret-s3cret-s3cret-s3cret-s3cret",
            "MAX_SEND_PER_SECOND": "25.5",
            "AWS_REGION": "eu-west-1",
            "AWS_SES_FROM_EMAIL": "news@example.com",
            "AWS_SES_CONFIGURATION_SET": "events",
            "EMAIL_BACKEND": "ses",
            "OUTBOX_DIR": "/tmp/out",
            "SENTRY_DSN": "https://key@sentry.example/1",
            "LOG_LEVEL": "debug",
            "TIMEZONE": "Asia/Seoul",
            "MAX_EMAILS_PER_REQUEST": "500",
        }
    )
    assert settings.server_url == "https://mail.example.com"
    assert settings.server_port == 8080
    assert settings.database_path == Path("/var/lib/ses/db.sqlite")
    assert settings.ses.max_send_per_s == 25.5
    assert settings.ses.region == "eu-west-1"
    assert settings.ses.configuration_set == "events"
    assert settings.ses.backend == "ses"
    assert settings.log_level == "DEBUG"
    assert settings.timezone == "Asia/Seoul"
    assert settings.max_emails_per_request == 500


def test_port_variable_from_the_platform_wins() -> None:
    assert load({"PORT": "5000", "SERVER_PORT": "3000"}).server_port == 5000


def test_secrets_never_appear_in_repr() -> None:
    text = repr(load({"JWT_SECRET": "hunter2-secret-hunter2-secret-hunter2", "SENTRY_DSN": "https://dsn-secret@x/1"}))
    assert "hunter2-secret" not in text and "dsn-secret" not in text


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"SERVER_PORT": "abc"}, "SERVER_PORT: 'abc' is not a whole number"),
        ({"SERVER_PORT": "70000"}, "SERVER_PORT: must be between 0 and 65535"),
        ({"MAX_SEND_PER_SECOND": "0"}, "MAX_SEND_PER_SECOND: must be > 0"),
        ({"MAX_SEND_PER_SECOND": "fast"}, "MAX_SEND_PER_SECOND: 'fast' is not a number"),
        ({"EMAIL_BACKEND": "smtp"}, "EMAIL_BACKEND: 'smtp' is not one of ses, outbox, auto"),
        ({"EMAIL_BACKEND": "ses"}, "EMAIL_BACKEND: ses needs AWS_SES_FROM_EMAIL"),
        ({"DATABASE_URL": "mysql://x/db"}, "DATABASE_URL: must start with sqlite:// or postgresql://"),
        ({"DATABASE_URL": "postgres://x"}, "DATABASE_URL: a postgresql:// URL must name a host and a database"),
        ({"TIMEZONE": "Mars/Olympus"}, "TIMEZONE: 'Mars/Olympus' is not an IANA time zone"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL: 'LOUD' is not one of"),
        ({"SERVER_URL": "ftp://x"}, "SERVER_URL: 'ftp://x' is not an http(s) URL"),
        ({"AWS_SES_FROM_EMAIL": "news@"}, "AWS_SES_FROM_EMAIL: 'news@' is not a usable address"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(environ)
    assert problem in str(raised.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load({"SERVER_PORT": "x", "MAX_SEND_PER_SECOND": "-1", "EMAIL_BACKEND": "nope"})
    assert len(raised.value.problems) == 3


def test_auto_backend_needs_credentials_and_a_sender() -> None:
    assert load({"AWS_SES_FROM_EMAIL": "a@b.co"}).ses.backend == "outbox"
    assert load({"AWS_ACCESS_KEY_ID": "AKIA"}).ses.backend == "outbox"
    chosen = load({"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SES_FROM_EMAIL": "a@b.co"}).ses
    assert chosen.backend == "ses" and "auto" in chosen.backend_reason


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite://sqlite3.db", "sqlite3.db"), ("sqlite:///abs/x.db", "/abs/x.db"), ("sqlite://dir/x.db", "dir/x.db")],
)
def test_database_urls(url: str, path: str) -> None:
    assert parse_database_url(url) == Path(path)


def test_sender_with_a_display_name_is_accepted() -> None:
    assert load({"AWS_SES_FROM_EMAIL": "Newsletter <news@example.com>"}).ses.from_email == (
        "Newsletter <news@example.com>"
    )


def test_local_server_url_is_detected() -> None:
    assert load({}).server_url_is_local
    assert not load({"SERVER_URL": "https://mail.example.com"}).server_url_is_local


def test_the_api_is_protected_unless_told_otherwise() -> None:
    with pytest.raises(ConfigError) as refused:
        load_strict({})
    assert "JWT_SECRET: required" in str(refused.value) and "AUTH_DISABLED=true" in str(refused.value)
    assert load_strict({"AUTH_DISABLED": "true"}).auth.disabled
    # A secret always protects the API, whatever AUTH_DISABLED says.
    assert not load_strict({"AUTH_DISABLED": "true", "JWT_SECRET": "x" * 32}).auth.disabled


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_strict({"JWT_SECRET": "short", "API_KEY": "also-short"})
    assert "JWT_SECRET: must be at least 32 characters" in str(refused.value)
    assert "API_KEY: must be at least 32 characters" in str(refused.value)


def test_the_pixel_url_follows_the_port_when_server_url_is_unset() -> None:
    assert load({"SERVER_PORT": "8080"}).server_url == "http://localhost:8080"
    assert load({"PORT": "5000"}).server_url == "http://localhost:5000"
    assert (
        load({"SERVER_PORT": "8080", "SERVER_URL": "https://mail.example.com"}).server_url == "https://mail.example.com"
    )


def test_an_open_server_binds_loopback_unless_told() -> None:
    assert load_strict({"AUTH_DISABLED": "true"}).server_host == "127.0.0.1"
    assert load_strict({"AUTH_DISABLED": "true", "SERVER_HOST": "0.0.0.0"}).server_host == "0.0.0.0"
    assert load_strict({"JWT_SECRET": "x" * 32}).server_host == "0.0.0.0"


def test_an_api_key_alone_turns_authentication_on() -> None:
    settings = load_strict({"API_KEY": "k" * 32})
    assert not settings.auth.disabled and settings.auth.jwt_secret is None
    assert not load_strict({"AUTH_DISABLED": "true", "API_KEY": "k" * 32}).auth.disabled


def test_trust_defaults() -> None:
    settings = load({})
    assert settings.auth.require_exp and not settings.sns.allow_any_topic and settings.sns.topic_arns == ()
    assert not load({"JWT_REQUIRE_EXP": "false"}).auth.require_exp
    assert load({"SNS_ALLOW_ANY_TOPIC": "true"}).sns.allow_any_topic


def test_http_timeouts() -> None:
    settings = load({})
    assert (settings.http_idle_timeout_s, settings.http_body_timeout_s) == (75.0, 60.0)
    settings = load({"HTTP_IDLE_TIMEOUT_S": "5", "HTTP_BODY_TIMEOUT_S": "2.5"})
    assert (settings.http_idle_timeout_s, settings.http_body_timeout_s) == (5.0, 2.5)
