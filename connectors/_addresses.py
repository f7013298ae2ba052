"""Which IP addresses an outbound request may connect to: globally routable only.

``ipaddress``'s ``is_global`` is the base; its tables differ between Python
releases, so the IANA special-purpose ranges that are not globally reachable
are also listed here (shared address space, benchmarking, documentation,
reserved, multicast). IPv6 must be global unicast (2000::/3).

IPv6 forms that carry an IPv4 address are judged by that address: IPv4-mapped
``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d`` (what DNS64 answers on an
IPv6-only host), 6to4 ``2002:aabb:ccdd::`` and Teredo ``2001:0::`` (server and
client). The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) places the IPv4
address where the operator chose, so it is refused.
"""

from __future__ import annotations

import ipaddress

# What the guard's refusal says and raises (connectors._aiohttp, connectors._urllib3).
ALLOW_HINT = "set allow_private: true on the destination to allow it"


class AddressRefused(OSError):
    """A connection to an address the guard does not allow; never retried."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_NOT_GLOBAL = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT; 100.100.100.200 is a metadata service)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local (169.254.169.254: cloud metadata)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
    )
)

_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_NOT_GLOBAL = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments (Teredo is handled before)
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4 (handled before; listed so no form slips through)
        "3fff::/20",  # documentation
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def parse(text: str) -> IPAddress:
    """An address as ``getaddrinfo`` reports it (an IPv6 scope ``%eth0`` is dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def _v4_global(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in net for net in _V4_NOT_GLOBAL)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 form carries, or None for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in _NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip in _TEREDO and ip.teredo is not None:
        return ip.teredo
    return None


def is_global(ip: IPAddress) -> bool:
    """True when ``ip`` is globally routable, including what an IPv6 form embeds."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_global(ip)
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        return all(_v4_global(v4) for v4 in embedded)
    if ip in _NAT64_LOCAL or ip not in _V6_GLOBAL_UNICAST:
        return False
    return ip.is_global and not any(ip in net for net in _V6_NOT_GLOBAL)
