"""Honest opens: each rule of the person-or-machine heuristic, and their order (issue #17, item 5)."""

from __future__ import annotations

import ipaddress
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import machine_opens as m
from pipeline.machine_opens import Hit, Verdict, Why, classify

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
GOOGLE_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
HOME_IP = "203.0.113.7"  # TEST-NET-3: nobody's network
EOP_IP = "40.107.22.5"
APPLE_IP = "17.58.1.1"
LATER_S = 3600.0


def _open(user_agent: str | None = CHROME, ip: str | None = HOME_IP, seconds: float | None = LATER_S) -> Verdict:
    return classify(user_agent, ip, seconds, hit=Hit.OPEN)


def _click(user_agent: str | None = CHROME, ip: str | None = HOME_IP, seconds: float | None = LATER_S) -> Verdict:
    return classify(user_agent, ip, seconds, hit=Hit.CLICK)


# --- people --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_agent",
    [
        CHROME,
        # Apple Mail with Mail Privacy Protection off fetches itself, with its full User-Agent.
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17126; Pro)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.12.0",
        "okhttp/4.12.0",  # Android mail apps fetch images with their HTTP library's name
        "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240705.005)",
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile",
        "Mozilla/5.0 (Linux; Android 9; CUBOT KINGKONG 5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0 Mobile",
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Robotics Lab Edition)",
    ],
)
def test_a_mail_client_or_a_browser_is_a_person(user_agent: str) -> None:
    assert _open(user_agent) == Verdict(False, Why.NO_MACHINE_SIGNAL)
    assert _click(user_agent) == Verdict(False, Why.NO_MACHINE_SIGNAL)


def test_google_image_proxy_is_a_person() -> None:
    # Gmail fetches through it when the message is opened, from Google's network.
    assert _open(GOOGLE_PROXY, "66.249.84.12") == Verdict(False, Why.GOOGLE_IMAGE_PROXY)
    assert _open("Mozilla/5.0 (via ggpht.com)") == Verdict(False, Why.GOOGLE_IMAGE_PROXY)


@pytest.mark.parametrize("ip", [None, "", "unknown", "1.2.3.4:443", "17.0.0.0/8", "2001:db8::1", "52.96.0.10"])
def test_no_address_or_an_ordinary_one_says_nothing(ip: str | None) -> None:
    # 52.96.0.0/14 is Exchange Online, where Outlook on the web fetches images for a reader.
    assert _open(ip=ip) == Verdict(False, Why.NO_MACHINE_SIGNAL)


# --- rule 1: the delivery window -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "machine"), [(-30.0, True), (0.0, True), (2.999, True), (3.0, False), (None, False)]
)
def test_a_hit_within_three_seconds_of_delivery_is_a_machine(seconds: float | None, machine: bool) -> None:
    for verdict in (_open(seconds=seconds), _click(seconds=seconds)):
        assert verdict == (Verdict(True, Why.DELIVERY_WINDOW) if machine else Verdict(False, Why.NO_MACHINE_SIGNAL))


@pytest.mark.parametrize("seconds", [math.nan, math.inf])
def test_an_odd_delivery_time_says_nothing(seconds: float) -> None:
    assert _open(seconds=seconds) == Verdict(False, Why.NO_MACHINE_SIGNAL)


def test_the_window_outranks_everything_even_google() -> None:
    assert _open(GOOGLE_PROXY, seconds=1.0) == Verdict(True, Why.DELIVERY_WINDOW)
    assert _open("curl/8.5.0", EOP_IP, seconds=1.0).why is Why.DELIVERY_WINDOW


# --- rule 2: mail-filtering networks ---------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "40.92.0.1",
        EOP_IP,
        "52.100.0.0",
        "52.103.255.255",
        "52.238.78.88",
        "104.47.3.4",
        "2a01:111:f400::1",
        "2a01:111:f403:c000::5",
        "::ffff:40.107.22.5",
        "209.222.82.10",
        "35.157.190.230",
    ],
)
def test_a_mail_filtering_network_is_a_machine_for_opens_and_clicks(ip: str) -> None:
    assert _open(ip=ip) == _click(ip=ip) == Verdict(True, Why.SCANNER_NETWORK)


def test_a_scanner_network_outranks_a_person_s_user_agent() -> None:
    assert _open(GOOGLE_PROXY, EOP_IP) == Verdict(True, Why.SCANNER_NETWORK)


@pytest.mark.parametrize("ip", ["40.91.255.255", "40.94.0.0", "52.104.0.0", "104.47.128.0", "52.238.78.89"])
def test_just_outside_a_scanner_network_is_not_one(ip: str) -> None:
    assert _open(ip=ip).why is Why.NO_MACHINE_SIGNAL


# --- rules 3 and 4: no user agent, Apple's proxy agent -------------------------------------


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_no_user_agent_is_a_machine(user_agent: str | None) -> None:
    assert _open(user_agent) == _click(user_agent) == Verdict(True, Why.NO_USER_AGENT)


def test_apple_mail_privacy_protection_fetches_with_a_bare_mozilla() -> None:
    assert _open("Mozilla/5.0") == Verdict(True, Why.APPLE_MPP)
    assert _open(" Mozilla/5.0 ", ip="104.28.40.1") == Verdict(True, Why.APPLE_MPP)
    assert _click("Mozilla/5.0") == Verdict(True, Why.AUTOMATION)  # MPP does not click; no browser says only that
    assert _open("Mozilla/5.0 (Macintosh)").why is Why.NO_MACHINE_SIGNAL


# --- rule 6: machine user agents -----------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "why"),
    [
        ("Barracuda Sentinel (EE)", Why.SCANNER_AGENT),
        ("Mozilla/5.0 (compatible; Mimecast URL Protect)", Why.SCANNER_AGENT),
        ("Proofpoint URL Defense", Why.SCANNER_AGENT),
        ("Mozilla/5.0 urldefense.proofpoint.com", Why.SCANNER_AGENT),
        ("Microsoft SafeLinks Scanner", Why.SCANNER_AGENT),
        ("CiscoSecureEmail/1.0", Why.SCANNER_AGENT),
        ("IronPort Web Security", Why.SCANNER_AGENT),
        ("Mozilla/5.0 (FortiMail)", Why.SCANNER_AGENT),
        ("Trend Micro Email Security", Why.SCANNER_AGENT),
        ("Sophos Email Appliance", Why.SCANNER_AGENT),
        ("Forcepoint Email Security", Why.SCANNER_AGENT),
        ("Symantec Messaging Gateway", Why.SCANNER_AGENT),
        ("Zscaler/1.0", Why.SCANNER_AGENT),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0 Safari/537.36",
            Why.AUTOMATION,
        ),
        (
            "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
            Why.AUTOMATION,
        ),
        ("curl/8.5.0", Why.AUTOMATION),
        ("Wget/1.21.4", Why.AUTOMATION),
        ("python-requests/2.32.3", Why.AUTOMATION),
        ("Python-urllib/3.11", Why.AUTOMATION),
        ("Python/3.11 aiohttp/3.9.5", Why.AUTOMATION),
        ("python-httpx/0.27.0", Why.AUTOMATION),
        ("Go-http-client/1.1", Why.AUTOMATION),
        ("Java/1.8.0_402", Why.AUTOMATION),
        ("Apache-HttpClient/4.5.14 (Java/17.0.2)", Why.AUTOMATION),
        ("libwww-perl/6.72", Why.AUTOMATION),
        ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", Why.AUTOMATION),
        ("axios/1.7.2", Why.AUTOMATION),
        ("PostmanRuntime/7.39.0", Why.AUTOMATION),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Why.CRAWLER),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", Why.CRAWLER),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", Why.CRAWLER),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", Why.CRAWLER),
        ("WhatsApp/2.23.20.0 A", Why.CRAWLER),
        ("TelegramBot (like TwitterBot)", Why.CRAWLER),
        ("Twitterbot/1.0", Why.CRAWLER),
        ("Mozilla/5.0 (compatible; Baiduspider/2.0)", Why.CRAWLER),
        ("Mozilla/5.0 (compatible; Yahoo! Slurp)", Why.CRAWLER),
        ("Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5", Why.CRAWLER),
        ("my-link-bot", Why.CRAWLER),
    ],
)
def test_a_machine_user_agent_is_a_machine(user_agent: str, why: Why) -> None:
    assert _open(user_agent) == _click(user_agent) == Verdict(True, why)


# --- rule 7: Apple's networks, for opens only ------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        APPLE_IP,
        "17.255.255.255",
        "104.28.40.1",
        "140.248.5.6",
        "146.75.0.1",
        "172.224.226.33",
        "172.226.255.1",
        "2606:54c3::1",
        "2a02:26f7:b3c0:4000::1",
        "2a09:bac2::9",
        "::ffff:17.1.2.3",
    ],
)
def test_a_pixel_hit_from_apple_s_relay_is_mail_privacy_protection(ip: str) -> None:
    assert _open(ip=ip) == Verdict(True, Why.APPLE_MPP)


def test_a_click_from_apple_s_relay_is_safari_behind_private_relay() -> None:
    assert _click(ip="172.225.1.2") == Verdict(False, Why.NO_MACHINE_SIGNAL)
    assert _click("curl/8.5.0", ip=APPLE_IP).why is Why.AUTOMATION


@pytest.mark.parametrize("ip", ["16.255.255.255", "18.0.0.0", "104.27.255.255", "172.227.0.0", "2a09:bac1::1"])
def test_just_outside_apple_s_networks_is_not_apple(ip: str) -> None:
    assert _open(ip=ip).why is Why.NO_MACHINE_SIGNAL


# --- the lists and the verdicts ---------------------------------------------------------------


def test_every_reason_has_one_verdict_and_only_two_are_people() -> None:
    for why in Why:
        verdict = m._VERDICTS[why]
        assert verdict == Verdict(why not in m.HUMAN_REASONS, why)
    assert {why for why in Why if not m._VERDICTS[why].machine} == {Why.GOOGLE_IMAGE_PROXY, Why.NO_MACHINE_SIGNAL}


def test_the_vendored_lists_are_networks_and_do_not_overlap() -> None:
    apple = [ipaddress.ip_network(cidr) for cidr in m.APPLE_NETWORKS]
    scanners = [ipaddress.ip_network(cidr) for cidr in m.SCANNER_NETWORKS]
    assert not any(a.overlaps(s) for a in apple for s in scanners if a.version == s.version)
    assert len(m.APPLE_NETWORKS) + len(m.SCANNER_NETWORKS) < 50  # vendored small, on purpose


def test_a_network_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError):
        m.networks(["17.0.0.1/8"])


addresses = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
    st.sampled_from([ipaddress.ip_network(c) for c in m.APPLE_NETWORKS + m.SCANNER_NETWORKS]).map(
        lambda n: n.network_address
    ),
    st.sampled_from([ipaddress.ip_network(c) for c in m.APPLE_NETWORKS + m.SCANNER_NETWORKS]).map(
        lambda n: n.broadcast_address
    ),
)


@given(address=addresses)
def test_membership_is_what_ipaddress_says(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    for cidrs in (m.APPLE_NETWORKS, m.SCANNER_NETWORKS):
        expected = any(address in ipaddress.ip_network(cidr) for cidr in cidrs)
        assert (address in m.networks(cidrs)) == expected


@given(
    user_agent=st.none() | st.text(max_size=300),
    ip=st.none() | st.text(max_size=60) | st.ip_addresses().map(str),
    seconds=st.none() | st.floats(allow_nan=True),
    hit=st.sampled_from(Hit),
)
def test_classify_never_raises(user_agent: str | None, ip: str | None, seconds: float | None, hit: Hit) -> None:
    verdict = classify(user_agent, ip, seconds, hit=hit)
    assert verdict.machine == (verdict.why not in m.HUMAN_REASONS)
