"""Callback URLs: parsed by the parser that sends them; the SSRF guard refuses internal targets by default."""

from __future__ import annotations

import ipaddress

import pytest

from core.errors import CallbackRefused
from jobs.callback_target import TargetPolicy, is_public, parse_callback_url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:6395/\r\nSET x 1", "control characters"),
        ("http://127.0.0.1:<img src=x>/", "spaces"),
        ("http://127.0.0.1:<img>/", "not a valid URL"),
        ("http://h.example:99999/", "invalid port"),
        ("http://h.example:0/", "invalid port"),
        ("http://exa%20mple.com/", "invalid host"),
        ("ftp://h.example/", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("http:///path", "no host"),
        ("http://h.example/\x00", "control characters"),
        ("http://h.example/" + "a" * 2048, "at most 2048"),
    ],
)
def test_urls_that_cannot_be_sent_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused, match=why):
        parse_callback_url(url)


@pytest.mark.parametrize(
    "url", ["http://hooks.example.com/x?a=1", "https://bücher.example/a", "http://[2001:db8::1]:8080/", "http://h:1/"]
)
def test_ordinary_urls_pass(url: str) -> None:
    assert parse_callback_url(url).scheme in ("http", "https")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.169.254",  # cloud metadata
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
    ],
)
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_a_host_name_resolving_to_loopback_is_refused_by_default() -> None:
    with pytest.raises(CallbackRefused, match="resolves to a non-public address"):
        TargetPolicy().resolve(parse_callback_url("http://localhost:9/hook"))


def test_allowed_networks_and_host_names_are_exceptions() -> None:
    url = parse_callback_url("http://localhost:9/hook")
    assert TargetPolicy.from_entries(["127.0.0.0/8", "::1/128"]).resolve(url).is_loopback
    assert TargetPolicy.from_entries(["LOCALHOST."]).resolve(url).is_loopback
    with pytest.raises(CallbackRefused):
        TargetPolicy.from_entries(["10.0.0.0/8", "hooks.example"]).resolve(url)


def test_a_literal_internal_address_is_refused_at_once_and_a_name_is_left_for_send_time() -> None:
    policy = TargetPolicy()
    with pytest.raises(CallbackRefused, match=r"non-public address \(169.254.169.254\)"):
        policy.check_literal(parse_callback_url("http://169.254.169.254/latest/meta-data"))
    with pytest.raises(CallbackRefused):
        policy.check_literal(parse_callback_url("http://[::ffff:7f00:1]/"))
    policy.check_literal(parse_callback_url("http://localhost/"))  # resolved and checked when sending
    TargetPolicy.from_entries(["127.0.0.0/8"]).check_literal(parse_callback_url("http://127.0.0.1:8/"))


def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(CallbackRefused, match="does not resolve"):
        TargetPolicy().resolve(parse_callback_url("http://no-such-host.invalid/"))
