"""Where a callback may go: the URL checks shared by upload and delivery, and the SSRF guard.

A `callback_url` is parsed with `httpx.URL`, the parser that sends it, so a
URL that passes at upload can be sent. Its host is resolved at send time and
every address it resolves to must be public (not loopback, private, link-local,
unique-local, multicast, reserved, unspecified or a cloud metadata address),
unless `CALLBACK_ALLOWED_NETWORKS` names the host or a network holding the
address. The request then goes to the address that was checked, so a second
DNS answer cannot point it elsewhere (no DNS-rebinding window).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import CallbackRefused

if TYPE_CHECKING:
    import httpx

CALLBACK_URL_MAX_CHARS = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Named for clarity: both are also covered by the link-local and unique-local checks.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# IPv6 prefixes that carry an IPv4 address a gateway would connect to (NAT64, 6to4 via `.sixtofour`).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_callback_url(text: str) -> httpx.URL:
    """The URL, if it is one we can send to: http(s), a host, a valid port, no spaces or control characters.

    Raises:
        CallbackRefused: with a message that says what is wrong (shown to the client as a 422).
    """
    if len(text) > CALLBACK_URL_MAX_CHARS:
        raise CallbackRefused(f"callback_url must be at most {CALLBACK_URL_MAX_CHARS} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise CallbackRefused("callback_url must not contain spaces or control characters")
    import httpx  # here: importing this module (the API, the scheduler) need not load it

    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise CallbackRefused(f"callback_url is not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise CallbackRefused("callback_url must be an http:// or https:// URL")
    host = url.raw_host.decode("ascii", errors="replace")
    if not host:
        raise CallbackRefused("callback_url has no host")
    if _literal_ip(host) is None and not all(ch.isalnum() or ch in ".-_" for ch in host):
        raise CallbackRefused("callback_url has an invalid host name")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise CallbackRefused("callback_url has an invalid port (1-65535)")
    return url


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public(address: IPAddress) -> bool:
    """False for every address a callback must not reach by default."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    return not (
        address in METADATA_ADDRESSES
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or not address.is_global
    )


@dataclass(frozen=True)
class TargetPolicy:
    """Which callback targets are allowed besides public addresses (`CALLBACK_ALLOWED_NETWORKS`)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> TargetPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows(self, address: IPAddress) -> bool:
        return is_public(address) or any(address in network for network in self.networks)

    def check_literal(self, url: httpx.URL) -> None:
        """Refuses a URL whose host is an IP address that is not allowed (host names are checked at send time).

        Raises:
            CallbackRefused: the address is private, loopback, link-local, metadata... and not allowed.
        """
        host = url.raw_host.decode("ascii", errors="replace")
        address = _literal_ip(host)
        if address is not None and not self.allows_host(host) and not self.allows(address):
            raise CallbackRefused(f"callback_url points to a non-public address ({address}); not allowed")

    def resolve(self, url: httpx.URL) -> IPAddress:
        """The address to connect to: the host's first address, after checking all of them.

        Raises:
            CallbackRefused: the host does not resolve, or resolves to an address that is not allowed.
        """
        host = url.raw_host.decode("ascii", errors="replace")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise CallbackRefused(f"the callback host {host!r} does not resolve ({exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found]
        if not addresses:
            raise CallbackRefused(f"the callback host {host!r} does not resolve")
        if not self.allows_host(host):
            refused = [address for address in addresses if not self.allows(address)]
            if refused:
                raise CallbackRefused(
                    f"the callback host {host!r} resolves to a non-public address ({refused[0]}); not allowed"
                )
        return addresses[0]
