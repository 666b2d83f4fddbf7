"""The `ses-sender` command: its commands and options (Typer), and `main`, the console script.

Each command reads its options, builds a `Client` and hands over to the module that does
the work; what it prints comes from `output.py`. `main` is the one place a Failure
becomes a line on stderr and an exit code (docs/cli.md#exit-codes): 0 done, 1 the server
failed or could not be reached, 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console

from stages.cli import send as sending
from stages.cli import suppressions as suppression_files
from stages.cli.client import Client, Credentials, topic_path
from stages.cli.errors import ExitCode, Failure
from stages.cli.output import print_json, say, topic_table, topics_table
from stages.cli.upload import AT_FORMS, MAX_CHUNK

DEFAULT_SERVER: Final = "http://localhost:3000"

app = typer.Typer(
    name="ses-sender",
    help="The operator's command line for a ses-sender server: send a CSV, watch, pause, cancel. See docs/cli.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a traceback could show a token among the locals
    context_settings={"help_option_names": ["-h", "--help"]},
)
suppressions_app = typer.Typer(help="Import and export the suppression list as CSV.", no_args_is_help=True)
app.add_typer(suppressions_app, name="suppressions")

Server = Annotated[
    str, typer.Option("--server", envvar="SES_SENDER_URL", help="The server's base URL.", show_envvar=True)
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="SES_SENDER_TOKEN", show_default=False, help="An API token, sent as Authorization: Bearer."
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="SES_SENDER_API_KEY", show_default=False, help="The API key, sent as X-API-KEY."),
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
TopicArg = Annotated[str, typer.Argument(help="The topic (campaign) id.", show_default=False)]


def out_console() -> Console:
    return Console(soft_wrap=True)


def err_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def connect(server: str, token: str | None, api_key: str | None) -> Client:
    return Client(server, Credentials(token=token or None, api_key=api_key or None))


CsvFile = Annotated[
    Path, typer.Option("--csv", exists=True, dir_okay=False, help="Recipients: an email column; others are data.")
]
Subject = Annotated[str, typer.Option("--subject", help='The subject, a template: "Hi {{first_name}}".')]
HtmlFile = Annotated[Path, typer.Option("--html", exists=True, dir_okay=False, help="The HTML body, a template.")]
TextFile = Annotated[
    Path | None,
    typer.Option("--text", exists=True, dir_okay=False, help="The plain-text body (else derived from the HTML)."),
]
Topic = Annotated[str | None, typer.Option("--topic", help="The topic id; else one derived from the file and options.")]
ListId = Annotated[str | None, typer.Option("--list", help="The mailing list (List-Id; unsubscribing leaves only it).")]
At = Annotated[str | None, typer.Option("--at", help=f"Send at this time: {AT_FORMS}.")]
SkipInvalid = Annotated[bool, typer.Option("--skip-invalid", help="Go on without the invalid rows.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Check the file and say what would happen; change nothing.")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return once uploaded; do not watch the sending.")]
ChunkSize = Annotated[int, typer.Option("--chunk-size", min=1, max=MAX_CHUNK, help="Recipients per request.")]


@app.command()
def send(
    csv: CsvFile,
    subject: Subject,
    html: HtmlFile,
    text: TextFile = None,
    topic: Topic = None,
    list_id: ListId = None,
    at: At = None,
    skip_invalid: SkipInvalid = False,
    dry_run: DryRun = False,
    no_wait: NoWait = False,
    chunk_size: ChunkSize = MAX_CHUNK,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Send a campaign to every address of a CSV file."""
    options = sending.SendOptions(
        csv=csv,
        subject=subject,
        html=html,
        text=text,
        topic=topic,
        list_id=list_id,
        at=at,
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        wait=not no_wait,
        chunk_size=chunk_size,
        json=as_json,
    )
    raise typer.Exit(sending.run(options, connect(server, token, api_key), out_console(), err_console()))


@app.command()
def status(
    topic: TopicArg, server: Server = DEFAULT_SERVER, token: Token = None, api_key: ApiKey = None, as_json: Json = False
) -> None:
    """One topic's counts: pending, sent, failed, bounced, opened..."""
    stats = connect(server, token, api_key).get(topic_path(topic))
    if as_json:
        print_json(stats)
    else:
        out_console().print(topic_table(stats))


@app.command()
def topics(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="How many topics.")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many.")] = 0,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Topics, most recently posted to first."""
    page = connect(server, token, api_key).get("/v1/topics", {"limit": str(limit), "offset": str(offset)})
    if as_json:
        print_json(page)
        return
    listed = page.get("topics", [])
    if not listed:
        say(out_console(), "no topics" + (f" after the first {offset:,}" if offset else ""))
        return
    out_console().print(topics_table(listed))


@app.command()
def pause(
    topic: TopicArg, server: Server = DEFAULT_SERVER, token: Token = None, api_key: ApiKey = None, as_json: Json = False
) -> None:
    """Stop a topic's sending, keeping its recipients."""
    answer = connect(server, token, api_key).post(topic_path(topic, "/pause")).body
    text = f"paused {answer.get('paused', 0):,} recipient(s) of {topic}; go on with: ses-sender resume {topic}"
    report(answer, as_json, text)


@app.command()
def resume(
    topic: TopicArg, server: Server = DEFAULT_SERVER, token: Token = None, api_key: ApiKey = None, as_json: Json = False
) -> None:
    """Put a paused topic's recipients back, at their original times."""
    answer = connect(server, token, api_key).post(topic_path(topic, "/resume")).body
    report(answer, as_json, f"resumed {answer.get('resumed', 0):,} recipient(s) of {topic}")


@app.command()
def cancel(
    topic: TopicArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Cancel everything of a topic not yet handed to SES. Asks first, unless --yes."""
    client = connect(server, token, api_key)
    if not yes:
        stats = client.get(topic_path(topic))
        unsent = sum(int(stats.get(name, 0)) for name in ("pending", "sending", "paused"))
        prompt = f"Cancel topic {topic}: {unsent:,} recipient(s) not sent yet? This cannot be undone"
        if not confirmed(prompt):
            raise Failure(ExitCode.USAGE, "not cancelled: nothing changed (answer y, or pass --yes)")
    answer = client.delete(topic_path(topic))
    report(answer, as_json, f"cancelled {answer.get('cancelled', 0):,} recipient(s) of {topic}")


def confirmed(prompt: str) -> bool:
    """A yes from the operator, asked on stderr; no input at all (EOF, Ctrl-C) is a no."""
    try:
        return typer.confirm(prompt, default=False, err=True)
    except typer.Abort:
        return False


def report(answer: Any, as_json: bool, text: str) -> None:
    if as_json:
        print_json(answer)
    else:
        say(out_console(), text)


SuppressionFile = Annotated[
    Path,
    typer.Argument(
        exists=True, dir_okay=False, help="CSV: an email column, a reason column if wanted.", show_default=False
    ),
]
Reason = Annotated[str, typer.Option("--reason", help="The reason for rows without one.")]
ExportFile = Annotated[
    Path | None, typer.Argument(dir_okay=False, help="Where to write; stdout without it.", show_default=False)
]


@suppressions_app.command("import")
def suppressions_import(
    file: SuppressionFile,
    reason: Reason = suppression_files.DEFAULT_REASON,
    skip_invalid: SkipInvalid = False,
    dry_run: DryRun = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Add every address of a CSV file to the suppression list (for all mail)."""
    code = suppression_files.import_file(
        file,
        reason,
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        as_json=as_json,
        client=connect(server, token, api_key),
        out=out_console(),
        err=err_console(),
    )
    raise typer.Exit(code)


@suppressions_app.command("export")
def suppressions_export(
    file: ExportFile = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    api_key: ApiKey = None,
    as_json: Json = False,
) -> None:
    """Write the whole suppression list as CSV (or JSON with --json)."""
    client = connect(server, token, api_key)
    raise typer.Exit(suppression_files.export(file, as_json=as_json, client=client, err=err_console()))


@app.command()
def token(
    sub: Annotated[str, typer.Option("--sub", help="Who the token is for (its `sub`).")],
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 3600s, 90m, 12h, 30d.")] = "30d",
) -> None:
    """Print an API token signed with JWT_SECRET (read from the environment or ./.env)."""
    import argparse

    # The server's own mint command, so a token from here is exactly one from there.
    from stages.ingest import __main__ as mint

    try:
        mint.parse_ttl(ttl)
    except argparse.ArgumentTypeError as problem:
        raise typer.BadParameter(str(problem), param_hint="--ttl") from None
    code = mint.main(["token", "--sub", sub, "--ttl", ttl])
    raise typer.Exit(ExitCode.OK if code == 0 else ExitCode.USAGE)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(ctx: typer.Context) -> None:
    """Run the server here, exactly as `python supervisor.py [ARGS]` (settings from the environment and ./.env)."""
    spec = importlib.util.find_spec("supervisor")
    if spec is None or spec.origin is None:
        raise Failure(ExitCode.USAGE, "supervisor.py is not installed with this ses-sender: run it from the project")
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: signals (SIGTERM from systemd or honcho) reach the supervisor itself.
    os.execv(sys.executable, [sys.executable, spec.origin, *ctx.args])


def main() -> None:
    """The console script: run the command; a Failure is one line on stderr and its exit code."""
    try:
        app(prog_name="ses-sender")
    except Failure as problem:
        say(err_console(), f"ses-sender: {problem.message}")
        sys.exit(problem.code)
    except Exception as problem:  # never a traceback (it could hold a token); SES_SENDER_DEBUG=1 shows it
        if os.environ.get("SES_SENDER_DEBUG"):
            raise
        say(err_console(), f"ses-sender: unexpected error: {type(problem).__name__}: {problem}")
        sys.exit(ExitCode.SERVER)
