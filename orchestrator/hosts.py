"""Which hosts a URL may point at (the allow-list of experts registered over the API) and whether
an address is loopback (what `serve` binds decides whether API keys are required by default).

    allowed = HostAllowList.parse(["10.0.0.0/8", "vllm.internal", "*.gpu.example.com"])
    allowed.allows("http://10.1.2.3:8000/v1")      # True
    allowed.allows("http://169.254.169.254/")      # False
    is_loopback_host("127.0.0.1"), is_loopback_host("0.0.0.0")   # True, False

Entries are IP addresses or networks (CIDR), exact host names, or `*.domain` (any name under
`domain`, not `domain` itself). Names are never resolved here: a name matches only a name entry
and an IP literal only a network entry, so DNS cannot smuggle a URL past the list.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    # ::ffff:10.0.0.1 is 10.0.0.1 to the socket layer
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


@dataclass(frozen=True)
class HostAllowList:
    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".gpu.example.com" for "*.gpu.example.com"

    @classmethod
    def parse(cls, entries: list[str] | tuple[str, ...]) -> "HostAllowList":
        """Raises ValueError naming the first entry that is neither a network nor a host name."""
        networks: list[IPNetwork] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.removeprefix("*.")
            if not _HOSTNAME.match(name):
                raise ValueError(f"{raw!r} is neither an IP address or network (CIDR) nor a host name (or *.domain)")
            if entry.startswith("*."):
                suffixes.append("." + name)
            else:
                names.add(name)
        return cls(tuple(networks), frozenset(names), tuple(suffixes))

    def __bool__(self) -> bool:
        return bool(self.networks or self.names or self.suffixes)

    def allows(self, url: str) -> bool:
        """Whether `url`'s host is on the list (any port)."""
        try:
            host = urlsplit(url).hostname
        except ValueError:
            return False
        if not host:
            return False
        host = host.rstrip(".")
        ip = _ip(host)
        if ip is not None:
            return any(ip.version == net.version and ip in net for net in self.networks)
        return host in self.names or any(host.endswith(s) for s in self.suffixes)


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` serves this machine only. Unknown names count as not loopback
    (fail closed): only `localhost` and loopback IP literals qualify."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback
