"""Operator commands of the ingest stage.

python -m stages.ingest token --sub NAME [--ttl 30d]   print an API token (HS256, JWT_SECRET)
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import jwt

from config.settings import ConfigError, load_from_process

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError("a duration such as 3600s, 90m, 12h or 30d")
    return int(match.group(1)) * UNITS[match.group(2)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.ingest")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print an API token signed with JWT_SECRET")
    token.add_argument("--sub", required=True, help="who the token is for (appears in the token)")
    token.add_argument("--ttl", type=parse_ttl, default=parse_ttl("30d"), help="lifetime, e.g. 12h or 30d")
    args = parser.parse_args(argv)
    try:
        settings = load_from_process()
    except ConfigError as problem:
        print(f"configuration error: {problem}", file=sys.stderr)
        return 78
    auth = settings.auth
    if auth.jwt_secret is None:
        print("JWT_SECRET is not set: there is nothing to sign tokens with", file=sys.stderr)
        return 78
    now = int(time.time())
    claims: dict[str, object] = {"sub": args.sub, "iat": now, "nbf": now, "exp": now + args.ttl}
    if auth.audience:
        claims["aud"] = auth.audience
    if auth.issuer:
        claims["iss"] = auth.issuer
    print(jwt.encode(claims, auth.jwt_secret, algorithm="HS256"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
