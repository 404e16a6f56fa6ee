"""What the gateway presents to one cluster: TLS options and credential.

Built once per cluster definition (never per request): the TLS client
options (the cluster's CA, ``insecure``, a client certificate for an
:class:`~karpor.config.model.X509Credential`, ``tls_server_name``) and the
:class:`~karpor.upstream.request.Credential` every upstream request carries
(the endpoint's prefix, ``Host``/``:authority`` and, for a
:class:`~karpor.config.model.TokenCredential`, the bearer token) in both
wire forms.  For an :class:`~karpor.config.model.ExecCredential` the token
comes from the exec plugin
(:class:`~karpor.upstream.execcredential.ExecCredentialCache`, asked by
the cluster's pool per request): :meth:`ClusterCredentials.with_token`
builds its credential, remembering the one of the last token.  A token
read from ``token_file`` is re-read when the file changes, checked at most
once per ``reread_interval``: swapping it is replacing one tuple.

Nothing here puts a token or a key into a message or a ``repr``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime

from karpor.config.model import Cluster, ExecCredential, TokenCredential, X509Credential
from karpor.net import tls
from karpor.upstream.request import Credential

#: How often (seconds) a ``token_file`` is checked for a new token.
TOKEN_REREAD_INTERVAL = 60.0


class CredentialError(Exception):
    """A cluster definition the gateway cannot use; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a cluster listens, parsed from its ``endpoint`` URL."""

    scheme: str
    host: str
    port: int
    #: the endpoint's path (``/k8s/clusters/c-1``), prepended to every target
    prefix: bytes

    @property
    def authority(self) -> bytes:
        """The ``Host`` header value."""
        host = self.host
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        default = 443 if self.scheme == "https" else 80
        if self.port == default:
            return host.encode("idna") if not host.startswith("[") else host.encode()
        return f"{host}:{self.port}".encode()


def parse_endpoint(url: str) -> Endpoint:
    """Parse a cluster endpoint (``https://host[:port][/prefix]``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise CredentialError(f"invalid endpoint {url!r}: {e}") from None
    if parts.scheme not in ("https", "http"):
        raise CredentialError(f"invalid endpoint {url!r}: the scheme must be https or http")
    if not parts.hostname:
        raise CredentialError(f"invalid endpoint {url!r}: no host")
    if parts.username or parts.password:
        raise CredentialError("invalid endpoint: user information is not allowed in the URL")
    if parts.query or parts.fragment:
        raise CredentialError(f"invalid endpoint {url!r}: no query or fragment allowed")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return Endpoint(parts.scheme, parts.hostname, port, parts.path.rstrip("/").encode())


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CredentialError(f"cannot read {what} {path}: {e.strerror}") from None


#: ``Authorization: Bearer <token>\r\n`` -> ``Bearer <token>``
_VALUE = slice(15, -2)


def _token_line(token: bytes) -> bytes:
    token = token.strip()
    if not token:
        raise CredentialError("the bearer token is empty")
    if any(c < 0x21 or c > 0x7E for c in token):
        raise CredentialError("the bearer token holds characters not allowed in a header")
    return b"Authorization: Bearer " + token + b"\r\n"


class ClusterCredentials:
    """TLS options and request credential for one cluster definition.

    Raises :class:`CredentialError` when the definition cannot be used
    (unreadable files, bad PEM).
    """

    def __init__(
        self,
        cluster: Cluster,
        clock: IReactorTime,
        reread_interval: float = TOKEN_REREAD_INTERVAL,
    ) -> None:
        self.endpoint = parse_endpoint(cluster.endpoint)
        self._clock = clock
        self._reread_interval = reread_interval
        self._token_file: str | None = None
        self._token_stat: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._host_line = b"Host: " + self.endpoint.authority + b"\r\n"
        self._auth_line = b""
        self._h2_base: tuple[tuple[bytes, bytes], ...] = (
            (b":scheme", self.endpoint.scheme.encode()),
            (b":authority", self.endpoint.authority),
        )
        cred = cluster.credential
        cert_pem: bytes | None = None
        key_pem: bytes | None = None
        #: the exec plugin giving this cluster's token (``None``: none)
        self.exec_credential: ExecCredential | None = None
        self._exec_token: str | None = None
        self._exec_credential = Credential(self.endpoint.prefix, b"", ())
        if isinstance(cred, ExecCredential):
            self.exec_credential = cred
        elif isinstance(cred, TokenCredential):
            if cred.token_file:
                self._token_file = cred.token_file
                self._load_token_file()
            elif cred.token:
                self._auth_line = _token_line(cred.token.encode("latin-1"))
            else:
                raise CredentialError("the token credential has no token")
        elif isinstance(cred, X509Credential):
            cert_pem = cred.certificate or (
                _read(cred.certificate_file, "client certificate")
                if cred.certificate_file
                else None
            )
            key_pem = cred.private_key or (
                _read(cred.private_key_file, "client key") if cred.private_key_file else None
            )
            if not cert_pem or not key_pem:
                raise CredentialError(
                    "the client certificate credential needs both a certificate and a key"
                )
        self._credential = self._build(self._auth_line)
        self.tls: tls.ClientTLS | None = None
        #: the same TLS options offering ALPN ``h2`` first (HTTP/2 streams)
        self.tls_h2: tls.ClientTLS | None = None
        if self.endpoint.scheme == "https":
            ca_pem = cluster.ca_pem or (
                _read(cluster.ca_file, "CA file") if cluster.ca_file else None
            )
            try:
                self.tls, self.tls_h2 = (
                    tls.client_options(
                        cluster.tls_server_name or self.endpoint.host,
                        ca_pem,
                        cert_pem,
                        key_pem,
                        insecure=cluster.insecure,
                        alpn=alpn,
                    )
                    for alpn in (tls.HTTP11, tls.H2)
                )
            except Exception as e:  # pyOpenSSL raises several types for bad PEM
                raise CredentialError(f"invalid TLS configuration: {type(e).__name__}") from None

    def _load_token_file(self) -> None:
        assert self._token_file is not None
        try:
            st = os.stat(self._token_file)
        except OSError as e:
            raise CredentialError(
                f"cannot read token file {self._token_file}: {e.strerror}"
            ) from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._token_stat:
            self._auth_line = _token_line(_read(self._token_file, "token file"))
            self._token_stat = stamp

    def _build(self, auth_line: bytes) -> Credential:
        h2 = self._h2_base
        if auth_line:
            h2 += ((b"authorization", auth_line[_VALUE]),)
        return Credential(self.endpoint.prefix, self._host_line + auth_line, h2)

    def _refresh(self) -> None:
        if self._token_file is not None:
            now = self._clock.seconds()
            if now >= self._next_check:
                self._next_check = now + self._reread_interval
                with contextlib.suppress(CredentialError):  # keep the last good token
                    self._load_token_file()
                self._credential = self._build(self._auth_line)

    def with_token(self, token: str) -> Credential:
        """The credential carrying ``token`` (an exec plugin's): built once
        per token, shared.  Raises :class:`CredentialError` for a token
        that cannot be a header value."""
        if token is not self._exec_token:
            self._exec_credential = self._build(_token_line(token.encode("latin-1", "replace")))
            self._exec_token = token
        return self._exec_credential

    def current(self) -> Credential:
        """The credential of the definition (a ``token_file``'s token as
        last read), shared: what every request to the cluster presents
        unless its token comes from an exec plugin."""
        if self._token_file is not None:
            self._refresh()
        return self._credential

    def __repr__(self) -> str:
        return f"<ClusterCredentials {self.endpoint.scheme}://{self.endpoint.host}:{self.endpoint.port}>"
