"""Where this stack may send a request whose URL a user or a registered worker chose.

Job webhooks, reference-image URLs and registered worker URLs are set through the API, so without a
policy any user could make the stack call its own Prefect API, the cloud metadata service or a port
on the operator's network (server-side request forgery). Every such URL passes two checks:

- **when it is submitted** (`EgressPolicy.check`): http(s) only, and every address its host resolves
  to allowed; a refusal is the client's 400 `URL_NOT_ALLOWED`;
- **when the request is made** (`EgressPolicy.client`): the host is resolved once, every address
  checked again and the connection made to the address that was checked, so a name that resolves
  elsewhere by then (DNS rebinding) is refused too. Redirects are never followed, and no proxy from
  the environment is used (it would be the proxy's address that got checked).

Allowed: public (globally routable) unicast addresses, and what the operator allowlists by host name or
network (`OURVIDZ_EGRESS_ALLOW`; registered workers also `OURVIDZ_WORKER_EGRESS_ALLOW`). Never allowed,
whatever the allowlist says: unspecified and multicast addresses, and the stack's own services (the
gateway, the Prefect API, the job database, Redis) on their ports.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from ourvidz.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
SERVICE_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "redis": 6379, "rediss": 6379}
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlNotAllowed(ValueError):
    """A URL the policy refuses; the message says why, without anything the caller did not send."""


class EgressRefused(httpx.ConnectError):
    """Raised by a policy's client instead of connecting to a refused address (an `httpx.HTTPError`,
    so callers that handle a failed request handle this one alike)."""


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def _embedded_v4(address: Address) -> Address:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), else the address itself:
    `::ffff:127.0.0.1` is loopback, whatever its IPv6 form says."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _never(address: Address) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    return None


def _kind(address: Address) -> str | None:
    """Why an address is not public (None when it is)."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if not address.is_global or address.is_reserved:
        return "reserved"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses requests to user- or worker-chosen URLs may reach (see the module docstring)."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()
    own_services: frozenset[tuple[Address, int]] = frozenset()  # (address, port): refused always
    resolver: Resolver = field(default=resolve, compare=False)

    @classmethod
    def of(
        cls, allow: Iterable[str], own_services: Iterable[str] = (), resolver: Resolver = resolve
    ) -> EgressPolicy:
        """A policy allowing `allow` (host names and networks, `10.0.0.0/8`, `::1`) and refusing the
        `own_services` (`host:port`, a host name resolved now) in every case."""
        hosts, networks = set(), []
        for entry in (item.strip().lower() for item in allow):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        own = frozenset(_service_addresses(own_services, resolver))
        return cls(frozenset(hosts), tuple(networks), own, resolver)

    def widened(self, allow: Iterable[str]) -> EgressPolicy:
        """This policy with more hosts and networks allowed (the stack's own services stay refused)."""
        extra = EgressPolicy.of(allow)
        return EgressPolicy(
            self.allowed_hosts | extra.allowed_hosts, self.allowed_networks + extra.allowed_networks,
            self.own_services, self.resolver,
        )  # fmt: skip

    def check(self, url: str) -> list[str]:
        """The addresses `url` would be reached at; raises UrlNotAllowed if any is refused."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise UrlNotAllowed("only http and https URLs are allowed")
        try:
            host, port = (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise UrlNotAllowed("the URL's port is not a number from 0 to 65535") from None
        if not host:
            raise UrlNotAllowed("the URL has no host")
        return self.addresses(host, port)

    def addresses(self, host: str, port: int) -> list[str]:
        """`host` resolved once, every address checked; raises UrlNotAllowed if any is refused."""
        host = host.strip("[]").lower().rstrip(".")
        try:
            found = [host] if _is_address(host) else self.resolver(host, port)
        except (OSError, UnicodeError):
            raise UrlNotAllowed(f"the host {host!r} cannot be resolved") from None
        if not found:
            raise UrlNotAllowed(f"the host {host!r} cannot be resolved")
        for text in found:
            if reason := self.refusal(host, ipaddress.ip_address(text), port):
                raise UrlNotAllowed(f"the host {host!r} resolves to {text} ({reason}), which is not allowed")
        return found

    def refusal(self, host: str, address: Address, port: int) -> str | None:
        """Why a connection to `address:port`, reached by the name `host`, is refused (None: allowed)."""
        plain = _embedded_v4(address)
        if reason := _never(plain) or _never(address):
            return reason
        if (plain, port) in self.own_services:
            return "one of this stack's own services"
        kind = _kind(plain) or _kind(address)
        if kind is None or host in self.allowed_hosts:
            return None
        if any(plain in network or address in network for network in self.allowed_networks):
            return None
        return kind

    def client(self, **options: Any) -> httpx.Client:
        """An httpx client that connects only where this policy allows (redirects not followed)."""
        return httpx.Client(transport=_Transport(self, options.pop("limits", None)), **options)


class _Backend(httpcore.SyncBackend):
    """Connects to the address the policy checked, never to a fresh resolution of the name."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:  # fmt: skip
        try:
            addresses = self._policy.addresses(host, port)
        except UrlNotAllowed as exc:
            raise EgressRefused(f"refused by the egress policy: {exc}") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


class _Transport(httpx.HTTPTransport):
    """httpx's transport on a connection pool whose network backend is `_Backend`. httpx takes no
    backend argument, so its pool (`_pool`) is replaced by one built alike; TLS still verifies the
    certificate against the URL's host name (the stream is wrapped with it as the server name)."""

    def __init__(self, policy: EgressPolicy, limits: httpx.Limits | None) -> None:
        limits = limits or httpx.Limits()
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(policy),
        )


def policies(settings: Settings) -> tuple[EgressPolicy, EgressPolicy]:
    """This process's policies: for user-chosen URLs (job webhooks, reference images), and for
    registered worker URLs (which may also reach `worker_egress_allow`)."""
    users = EgressPolicy.of(settings.egress_allow, own_services(settings))
    return users, users.widened(settings.worker_egress_allow or ())


def own_services(settings: Settings) -> list[str]:
    """`host:port` of the stack's own services as this process knows them: the gateway, the Prefect
    API, the job database and Redis."""
    from prefect.settings import PREFECT_API_URL

    urls = [PREFECT_API_URL.value() or "", settings.database_url, settings.redis_url or ""]
    services = [f"{settings.api_host}:{settings.api_port}", f"127.0.0.1:{settings.prefect_port}"]
    for url in urls:
        parts = _host_port(url)
        if parts is not None:
            services.append(parts)
    return services


def _host_port(url: str) -> str | None:
    """`host:port` of a service URL (None without a host: SQLite, unset)."""
    parts = urlsplit(url)
    try:
        port = parts.port or SERVICE_PORTS.get(parts.scheme.split("+", 1)[0])
    except ValueError:
        return None
    return f"{parts.hostname}:{port}" if parts.hostname and port else None


def _service_addresses(services: Iterable[str], resolver: Resolver) -> Iterable[tuple[Address, int]]:
    """Each service's addresses; one listening on every interface (`0.0.0.0`) is reached at loopback
    and at this machine's own addresses too."""
    for service in services:
        host, _, port = service.rpartition(":")
        host = host.strip("[]")
        try:
            found = [host] if _is_address(host) else resolver(host, int(port))
        except (OSError, UnicodeError, ValueError):
            continue
        for text in found:
            address = _embedded_v4(ipaddress.ip_address(text))
            if address.is_unspecified:
                yield from ((ipaddress.ip_address(a), int(port)) for a in _this_machine())
            yield address, int(port)


@functools.cache
def _this_machine() -> list[str]:
    try:
        return ["127.0.0.1", "::1", *socket.gethostbyname_ex(socket.gethostname())[2]]
    except OSError:
        return ["127.0.0.1", "::1"]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
