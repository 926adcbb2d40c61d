"""Which hosts may be reached over plain http: loopback only, so local test providers work
and a token never crosses a network in clear text. One rule for policy URLs (the checker) and
URLs a provider hands us (discovery)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (brackets allowed)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
