"""Honest opens (issue #17, item 5): was a pixel hit, or a click, a person or a machine?

Ingest calls `classify` for each pixel hit and each click, with what the request shows
(its User-Agent and client address) and, when the recorder knows it, the seconds since
SES's Delivery event for that recipient. The recorder keeps `opened` and `opens` as
before and counts `opened_human` and `opens_machine` from the verdict; clicks get the
same verdict, because security scanners follow links too. The answer never changes the
response: the pixel is served and the click is redirected either way.

The heuristic, in the order it is applied (the first rule that speaks decides):

1. Too soon after delivery (`delivery-window`): a hit less than DELIVERY_WINDOW_S (3 s)
   after the Delivery event is a machine. In that time the mailbox has to file the
   message and tell a client, a person has to notice and open it, and the client has to
   fetch the image: nobody gets through all that in 3 s, while gateways that scan at
   delivery (Microsoft Defender, Mimecast, Proofpoint, Barracuda) do. A longer window
   starts taking real opens of people watching their inbox; 3 s also absorbs a second
   of clock skew between SES and us. A hit *before* the Delivery time (negative seconds)
   is a gateway scanning before it accepts the mail. Unknown delivery time: no verdict.
2. A mail-filtering network (`scanner-network`): Microsoft 365's Exchange Online
   Protection and Barracuda Email Gateway Defense, whose published ranges only ever
   filter mail, so no person reads mail from them (SCANNER_NETWORKS below).
3. No User-Agent (`no-user-agent`): every mail client and browser sends one.
4. Apple Mail Privacy Protection (`apple-mpp`): its proxy fetches every image when the
   mail reaches the device, opened or not, with the bare User-Agent `Mozilla/5.0`. (A
   click with that User-Agent is a machine too: no browser sends it, so `automation`.)
5. Google's image proxy (`google-image-proxy`) is a PERSON: Gmail fetches images through
   it when the message is opened (User-Agent `... (via ggpht.com GoogleImageProxy)`).
6. A known machine User-Agent: a security scanner (`scanner-agent`: Barracuda,
   Mimecast, Proofpoint URL Defense, Microsoft Safe Links, Cisco IronPort, ...), a
   headless browser or an HTTP library (`automation`: HeadlessChrome, curl,
   python-requests, ...), or a crawler or link preview (`crawler`: Googlebot,
   Slackbot, WhatsApp, ...).
7. Apple's networks, for pixel hits only (`apple-mpp`): MPP loads images through
   iCloud Private Relay's egress, and Apple's own 17.0.0.0/8. Not for clicks: a click
   from there is Safari behind Private Relay, a person.
8. Otherwise a person (`no-machine-signal`).

What it cannot see: a scanner that borrows a browser's User-Agent from a cloud network
(Defender's detonation from Azure, Proofpoint's and Mimecast's own networks, which we
could only name by ASN), and an MPP user's real open (Apple serves it from its cache).
Outlook.com's and Yahoo's image proxies are left alone on purpose: like Google's, they
fetch when a person opens the mail.

Nothing is downloaded at run time: the lists below are vendored, with their source and
date, and small on purpose. Refresh them by hand from the same sources.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

DELIVERY_WINDOW_S: Final = 3.0
# What MPP's proxy sends, and nothing more, since 2021-09-20 (ua-parser/uap-core#509, 2021-09-27).
APPLE_PROXY_AGENT: Final = "Mozilla/5.0"

# Apple's networks, 2026-08-17.
# - 17.0.0.0/8: "The entire 17.0.0.0/8 address block is assigned to Apple" (Apple support,
#   "If your Apple devices aren't getting Apple push notifications", support.apple.com/102266).
# - The rest: the smallest IPv4 /16s and IPv6 /32s that hold every prefix of Apple's
#   iCloud Private Relay egress list (https://mask-api.icloud.com/egress-ip-ranges.csv,
#   3,290 IPv4 and 10,455 IPv6 prefixes as mirrored by github.com/hroost/icloud-private-
#   relay-iplist at 16f49af, 2026-08-17); MPP loads images through that relay
#   (wordtothewise.com/2021/09/apple-mpp-reporting-and-geolocation). The blocks are wider
#   than the list (it fills 4.5-69 % of each /16): they are Cloudflare's (104.28/16),
#   Fastly's (140.248/16, 146.75/16) and Akamai's (172.224-226/16) relay blocks, where
#   little else sends a pixel request, and the price of a 250 KB file is not worth it.
APPLE_NETWORKS: Final = (
    "17.0.0.0/8",
    "104.28.0.0/16",
    "140.248.0.0/16",
    "146.75.0.0/16",
    "172.224.0.0/16",
    "172.225.0.0/16",
    "172.226.0.0/16",
    "2606:54c0::/32",
    "2606:54c3::/32",
    "2a02:26f7::/32",
    "2a04:4e41::/32",
    "2a09:bac2::/32",
    "2a09:bac3::/32",
)

# Networks that only ever filter mail, 2026-09 (as collected, with the reasoning, in
# github.com/warmbly/warmbly tracking/scanner-networks.txt at 0b624e7):
# - Microsoft 365 / Exchange Online Protection: endpoint sets 9 and 10
#   (*.protection.outlook.com) of Microsoft's "Microsoft 365 URLs and IP address ranges".
#   Not the Exchange Online ranges: Outlook on the web fetches images from those when a
#   person opens the mail.
# - Barracuda Email Gateway Defense: the per-region ranges Barracuda publishes for its
#   filtering layer.
SCANNER_NETWORKS: Final = (
    "40.92.0.0/15",
    "40.107.0.0/16",
    "52.100.0.0/14",
    "52.238.78.88/32",
    "104.47.0.0/17",
    "2a01:111:f400::/48",
    "2a01:111:f403::/48",
    "3.24.133.128/25",
    "15.222.16.128/25",
    "35.157.190.224/27",
    "18.185.115.192/26",
    "18.184.203.224/27",
    "13.200.136.128/25",
    "35.176.92.96/27",
    "18.133.136.128/26",
    "18.133.136.96/27",
    "209.222.82.0/24",
)

# User-Agent markers, lowercase, found anywhere in the lowercased header. Substring tests,
# not one case-insensitive regex per list: those cost 40 µs a hit here, and a whole
# classification now costs about 9. Sources: the
# marker lists of warmbly/warmbly tracking/src/abuse.rs (2026) and
# jdavidbakr/mail-tracker#255 (2025-01), "Barracuda Sentinel (EE)" (JayBizzle/Crawler-
# Detect#552, 2025-01-27), and live-direct-marketing.online's scanner field guide
# (CiscoSecureEmail, IronPort, FortiMail). `okhttp`, `Dalvik` and `Microsoft Office`
# are left out on purpose: Android mail apps and Outlook fetch images with them when a
# person opens a message.
SCANNER_AGENTS: Final = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "safelinks",
    "forcepoint",
    "symantec",
    "trendmicro",
    "trend micro",
    "sophos",
    "zscaler",
    "ironport",
    "ciscosecureemail",
    "fortimail",
)
AUTOMATION_AGENTS: Final = (
    "headless",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "lighthouse",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python/",
    "aiohttp",
    "httpx",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "node-fetch",
    "axios/",
    "scrapy",
    "postmanruntime",
)
CRAWLER_AGENTS: Final = (
    "crawl",
    "spider",
    "slurp",
    "facebookexternalhit",
    "whatsapp",
    "telegrambot",
    "skypeuripreview",
    "bingpreview",
)
# `bot` as a word or before / ; ) - (Googlebot/2.1, Slackbot-LinkExpanding), not inside
# a word: the CUBOT phones' User-Agent is a person's.
BOT_WORD: Final = re.compile(r"\bbot\b|bot[/;)\-]|-bot")
GOOGLE_IMAGE_PROXY: Final = ("googleimageproxy", "ggpht.com")


class Hit(StrEnum):
    """What was requested: the open pixel or a click URL."""

    OPEN = "open"
    CLICK = "click"


class Why(StrEnum):
    """The rule that decided; the values are what the recorder stores and the README lists."""

    DELIVERY_WINDOW = "delivery-window"
    SCANNER_NETWORK = "scanner-network"
    NO_USER_AGENT = "no-user-agent"
    APPLE_MPP = "apple-mpp"
    SCANNER_AGENT = "scanner-agent"
    AUTOMATION = "automation"
    CRAWLER = "crawler"
    GOOGLE_IMAGE_PROXY = "google-image-proxy"
    NO_MACHINE_SIGNAL = "no-machine-signal"


HUMAN_REASONS: Final = frozenset({Why.GOOGLE_IMAGE_PROXY, Why.NO_MACHINE_SIGNAL})


@dataclass(frozen=True, slots=True)
class Verdict:
    """Machine or person, and the rule that said so."""

    machine: bool
    why: Why


_VERDICTS: Final = {why: Verdict(why not in HUMAN_REASONS, why) for why in Why}

# One number line for both families: IPv4 as it is, IPv6 shifted past every IPv4 value.
_IPV6_OFFSET: Final = 2**32


@dataclass(frozen=True, slots=True)
class Networks:
    """A set of address blocks, merged and sorted, searched by bisection."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        number = _number(address)
        at = bisect.bisect_right(self.starts, number) - 1
        return at >= 0 and number <= self.ends[at]


def _number(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return int(address) if address.version == 4 else int(address) + _IPV6_OFFSET


def networks(cidrs: Iterable[str]) -> Networks:
    """The blocks of `cidrs` (ValueError for one that is not a network) as a searchable set."""
    parsed = [ipaddress.ip_network(cidr) for cidr in cidrs]
    merged: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        *ipaddress.collapse_addresses(n for n in parsed if isinstance(n, ipaddress.IPv4Network)),
        *ipaddress.collapse_addresses(n for n in parsed if isinstance(n, ipaddress.IPv6Network)),
    ]
    spans = sorted((_number(n.network_address), _number(n.broadcast_address)) for n in merged)
    return Networks(tuple(start for start, _ in spans), tuple(end for _, end in spans))


_APPLE: Final = networks(APPLE_NETWORKS)
_SCANNERS: Final = networks(SCANNER_NETWORKS)


def client_address(raw: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `raw` names (an IPv4-mapped IPv6 address as the IPv4 one), or None."""
    try:
        address = ipaddress.ip_address((raw or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _by_timing(seconds_since_delivery: float | None) -> Why | None:
    if seconds_since_delivery is not None and seconds_since_delivery < DELIVERY_WINDOW_S:
        return Why.DELIVERY_WINDOW
    return None


def _has(lowered: str, markers: tuple[str, ...]) -> bool:
    return any(marker in lowered for marker in markers)


def _by_agent(user_agent: str, hit: Hit) -> Why | None:
    if not user_agent:
        return Why.NO_USER_AGENT
    if user_agent == APPLE_PROXY_AGENT:
        return Why.APPLE_MPP if hit is Hit.OPEN else Why.AUTOMATION
    lowered = user_agent.lower()
    if _has(lowered, GOOGLE_IMAGE_PROXY):
        return Why.GOOGLE_IMAGE_PROXY
    if _has(lowered, SCANNER_AGENTS):
        return Why.SCANNER_AGENT
    if _has(lowered, AUTOMATION_AGENTS):
        return Why.AUTOMATION
    if _has(lowered, CRAWLER_AGENTS) or BOT_WORD.search(lowered):
        return Why.CRAWLER
    return None


def classify(
    user_agent: str | None, client_ip: str | None, seconds_since_delivery: float | None, *, hit: Hit
) -> Verdict:
    """Person or machine for one pixel hit or click, with the rule that decided (the module docstring)."""
    address = client_address(client_ip)
    why = (
        _by_timing(seconds_since_delivery)
        or (Why.SCANNER_NETWORK if address in _SCANNERS else None)
        or _by_agent((user_agent or "").strip(), hit)
        or (Why.APPLE_MPP if hit is Hit.OPEN and address in _APPLE else None)
        or Why.NO_MACHINE_SIGNAL
    )
    return _VERDICTS[why]
