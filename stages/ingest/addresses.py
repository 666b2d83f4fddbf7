"""Recipient addresses: validated by email-validator, normalised for storage and SES.

email-validator spends most of its time on the domain (IDNA), which a campaign repeats
thousands of times, so each distinct domain is validated once and cached; the local
part is validated per address by the same library. Anything unusual (quoted local
parts, domain literals) takes the library's full path. SES has no SMTPUTF8, so a
non-ASCII local part is refused; a non-ASCII domain is sent in its Punycode form.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from email_validator.syntax import validate_email_local_part

MAX_ADDRESS_CHARS = 254  # RFC 5321 path limit, less the angle brackets
MAX_LOCAL_CHARS = 64  # RFC 5321 section 4.5.3.1.1


class InvalidAddress(ValueError):
    """The reason an address cannot be stored, in words for the API answer."""


def normalise(raw: str) -> str:
    """`local@ascii-domain`, trimmed with the domain lower-cased; InvalidAddress otherwise."""
    address = raw.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress("an email address must have an @-sign with text on both sides")
    if local.startswith('"') or domain.startswith("[") or "@" in local:
        return _full_check(address)
    if len(local) > MAX_LOCAL_CHARS:
        raise InvalidAddress(f"the part before the @-sign is longer than {MAX_LOCAL_CHARS} characters")
    try:
        validate_email_local_part(local, allow_smtputf8=False, allow_empty_local=False, quoted_local_part=False)
    except EmailNotValidError as problem:
        raise InvalidAddress(str(problem)) from None
    normalised = f"{local}@{_ascii_domain(domain.lower())}"
    if len(normalised) > MAX_ADDRESS_CHARS:
        raise InvalidAddress(f"the address is longer than {MAX_ADDRESS_CHARS} characters")
    return normalised


@lru_cache(maxsize=65_536)
def _ascii_domain(domain: str) -> str:
    try:
        checked = validate_email(f"postmaster@{domain}", check_deliverability=False)
    except EmailNotValidError as problem:
        raise InvalidAddress(str(problem)) from None
    return str(checked.ascii_domain)


def _full_check(address: str) -> str:
    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as problem:
        raise InvalidAddress(str(problem)) from None
    return str(checked.ascii_email)
