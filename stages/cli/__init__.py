"""`ses-sender`, the operator's command line.

This is not a pipeline stage: it is the operator's command line, a client of the HTTP
API. It runs in the operator's shell, talks to a server over HTTP like any other API
client (`client.py`), and never touches the database, the queues or the stages. The one
exception is `ses-sender serve`, which starts the server itself (`python supervisor.py`).

    app.py           the Typer app: commands and their options, nothing else
    client.py        HTTP with authentication, retries, and errors mapped to one line
    csvfile.py       a CSV read row by row, each row checked, bad ones named by line
    seen.py          the addresses met so far, on disk (exact, in bounded memory)
    upload.py        chunks, request bodies and Idempotency-Keys of a send
    send.py          `send`: check the file, upload it chunk by chunk, watch it go out
    watch.py         a topic's statistics as progress: sent, failed, rate, ETA
    progress.py      Rich bars on a terminal, plain lines elsewhere
    suppressions.py  `suppressions import` and `export`
    output.py        tables and JSON for the read commands
    errors.py        exit codes and the one exception that carries them
"""
