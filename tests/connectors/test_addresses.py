from __future__ import annotations

import ipaddress

import pytest

from connectors._addresses import embedded_ipv4, is_global, parse

REFUSED = [
    "0.0.0.0",
    "10.1.2.3",
    "100.64.0.1",  # shared address space (CGNAT)
    "100.100.100.200",  # a cloud metadata service inside 100.64.0.0/10
    "100.127.255.254",
    "127.0.0.1",
    "169.254.169.254",
    "172.16.0.1",
    "192.0.0.9",
    "192.0.2.1",  # documentation
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",  # benchmarking
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::7f00:1",  # IPv4-compatible (deprecated) loopback
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "::ffff:100.100.100.200",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::6464:64c8",  # NAT64 of 100.100.100.200
    "64:ff9b:1::808:808",  # local-use NAT64: embedding not fixed, refused
    "64:ff9b:1:7f00:1::",
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:7f00:1::1",
    "2002:0a00:0001::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45
    "2001:0:7f00:1:0:0:0:0",  # Teredo, server 127.0.0.1
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "5f00::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "fe80::1%eth0",
]

ALLOWED = [
    "8.8.8.8",
    "93.184.215.14",
    "100.63.255.255",  # just below 100.64.0.0/10
    "100.128.0.1",  # just above it
    "198.20.0.1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 (DNS64) form of a public address
    "2002:808:808::1",  # 6to4 of a public address
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
]


@pytest.mark.parametrize("text", REFUSED)
def test_non_global_addresses_are_refused(text: str) -> None:
    assert not is_global(parse(text))


@pytest.mark.parametrize("text", ALLOWED)
def test_global_addresses_are_allowed(text: str) -> None:
    assert is_global(parse(text))


def test_embedded_addresses_are_extracted() -> None:
    v4 = ipaddress.IPv4Address
    assert embedded_ipv4(ipaddress.IPv6Address("::ffff:1.2.3.4")) == (v4("1.2.3.4"),)
    assert embedded_ipv4(ipaddress.IPv6Address("64:ff9b::102:304")) == (v4("1.2.3.4"),)
    assert embedded_ipv4(ipaddress.IPv6Address("2002:102:304::")) == (v4("1.2.3.4"),)
    teredo = embedded_ipv4(ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2"))
    assert teredo == (v4("65.54.227.120"), v4("192.0.2.45"))
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1")) is None
