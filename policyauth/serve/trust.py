"""Which peers may tell the service what the original request was.

A forwarded method and target are believed only from the proxies the operator names
(`--trusted-proxy`), judged on the socket's peer address, never on a header (security case F01:
oauth2-proxy believed a client's `X-Forwarded-Uri`). Loopback is the default, so that a service
bound to a public address without configuration trusts nobody but its own host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED = ("127.0.0.0/8", "::1/128")


class TrustedPeers:
    def __init__(self, networks: Iterable[str] = DEFAULT_TRUSTED) -> None:
        """`networks` are CIDRs or single addresses; a bad one raises ValueError naming it."""
        parsed: list[Network] = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(f"--trusted-proxy {text!r} is not an IP address or CIDR") from None
        self.networks = tuple(parsed)
        self._seen: dict[str, bool] = {}

    def __contains__(self, host: object) -> bool:
        """Whether the peer `host` (an address string from the server, or None for a peer
        without an address) is trusted. Remembered per address: a proxy comes back often."""
        if not isinstance(host, str):
            return False
        known = self._seen.get(host)
        if known is None:
            known = self._judge(host)
            if len(self._seen) >= 1024:
                self._seen.clear()
            self._seen[host] = known
        return known

    def _judge(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
