"""Who is calling and what they may do: authentication and authorization
assembled for the front (sans-IO but for the files it reloads).

:class:`Access` is built once per worker from the settings
(:meth:`Access.from_settings`) and asked by the front protocol:

- :meth:`Access.peer`, once per connection, with the TLS peer certificate:
  verified against the gateway CA (when ``clientCertificates`` is on) and
  against the requestheader (front-proxy) CA; the result, a :class:`Peer`,
  is kept by the connection;
- :meth:`Access.authenticate`, per request, with the :class:`Peer` and the
  request headers, in this order: the gateway-CA certificate (refused when
  revoked or expired since the handshake); the front-proxy headers, only on
  a connection whose certificate verified against the requestheader CA with
  an allowed CN; the bearer token of the token file; a bearer JWT of a
  configured OpenID provider (:mod:`karpor.auth.oidc`; its 401 says why in
  general terms).  A bearer token comes from ``Authorization``, or, on a
  WebSocket upgrade without one, from ``Sec-WebSocket-Protocol``
  (``base64url.bearer.authorization.k8s.io.<token>``, as kube-apiserver
  reads it from browsers, which cannot set headers).  When nothing
  succeeded, a credential that was presented and refused is a 401; no
  credential at all is ``system:anonymous`` (group
  ``system:unauthenticated``) with ``anonymous: true``, else a 401.  Only
  dict lookups and a SHA-256 of a presented token happen here (the first
  sight of a JWT checks its signature once; the judgement is cached);
- :meth:`Access.authorize`, per cluster request: the policy
  (:mod:`karpor.auth.policy`), the caller's own ``Impersonate-*`` headers
  (403 unless the policy grants ``impersonate`` on the cluster; then the
  request is authorized as the impersonated identity) and the identity sent
  upstream (:func:`karpor.auth.impersonation.upstream_identity`);
- :meth:`Access.authorize_path`, for the gateway's own paths that need a
  grant (``/metrics``): the policy's ``nonResourceURLs`` rules (403);
- :meth:`Access.reviewer`, for the reviews a caller asks about itself on a
  cluster (``kubectl auth whoami``, ``auth can-i``; answered by
  :mod:`karpor.auth.reviews`): whom they are about and whom the cluster sees.

Without a policy file every *authenticated* caller may do everything,
impersonate included, as a policy granting ``impersonate`` on every cluster
would allow: a caller's ``Impersonate-*`` headers (``kubectl --as``,
``--as-group``) make the request go out as the identity asked for, in
``Impersonate-*`` headers the gateway writes (the cluster's own RBAC then
decides whether the gateway's credential may impersonate it); they are never
dropped so that the request silently runs as the cluster's credential.
``system:anonymous`` reaches no cluster.

An identity bearing an agent's user name or group
(:func:`karpor.auth.agentidentity.is_reserved`), asserted by whatever
means and also when impersonated, reaches no cluster and no gateway path
whatever the policy says: agents open tunnels, nothing else.

A request for a cluster that does not exist (:meth:`Access.unknown_cluster`)
is a 404 only for a caller who may learn which names exist
(:meth:`karpor.auth.policy.Policy.names`); for anyone else it is the same
403 a cluster the caller may not reach gets.

The token file, the policy file and the revocation list are
:class:`~karpor.auth.revocation.ReloadingFile` objects: :meth:`Access.poll`
(a timer of the service, every half second) re-checks them and returns
what to log; a bad file keeps the last good one.  A file that is bad at
start-up is an :class:`AccessError`: the gateway does not start.  The
token file is read record by record (:mod:`karpor.auth.tokens`): a bad
record is skipped and logged (at start-up too), the good ones apply, so
a token removed from the file stops working at the next reload even when
another line of the same edit is bad.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from karpor.auth.agentidentity import is_reserved
from karpor.auth.authenticate import CertificateAuthenticator, public_key_der
from karpor.auth.identity import ANONYMOUS_USER, UNAUTHENTICATED, Identity
from karpor.auth.impersonation import (
    authorize_impersonation,
    requested_identity,
    upstream_identity,
)
from karpor.auth.jwt import JwtError
from karpor.auth.oidc import OidcAuthenticator
from karpor.auth.policy import ALLOW_ALL, Attributes, Policy, attributes, load_policy
from karpor.auth.requestheader import RequestHeaderConfig, authenticate_headers
from karpor.auth.revocation import (
    REVOKED_FILE,
    ReloadingFile,
    RevocationList,
    load_revocations,
    write_atomically,
)
from karpor.auth.sections import AuthenticationSettings, AuthorizationSettings
from karpor.auth.tokens import TokenAuthenticator, TokenFile, load_token_file
from karpor.config.model import Cluster
from karpor.http.headers import websocket_bearer
from karpor.kube.clusterstatus import not_found
from karpor.kube.requestinfo import RequestInfoError, parse_request_info
from karpor.kube.status import ApiError

Header = tuple[bytes, bytes]

#: the identity of a caller without credentials, when ``anonymous`` is on
ANONYMOUS = Identity(ANONYMOUS_USER, (UNAUTHENTICATED,))

_BEARER = b"bearer "
_EMPTY_TOKENS = TokenFile(TokenAuthenticator())
#: a policy file without rules: denies everything (for clusters that do not exist)
_NO_RULES = Policy()
_T = TypeVar("_T")


class AccessError(Exception):
    """Access settings that cannot be used at start-up (the message is safe to log)."""


class Forbidden(ApiError):
    """A 403 of :meth:`Access.authorize`, with the request's attributes (for the audit log)."""

    def __init__(self, error: ApiError, attrs: Attributes | None) -> None:
        super().__init__(error.code, error.message, error.reason, error.details)
        self.attrs = attrs


@dataclass(frozen=True, slots=True)
class Reviewer:
    """Whom a caller's reviews about itself are about (:meth:`Access.reviewer`)."""

    #: the caller, or the identity its ``Impersonate-*`` headers ask for
    identity: Identity
    #: whom the gateway impersonates on the cluster (``None``: nobody, the
    #: cluster sees its own credential)
    upstream: Identity | None
    #: the identity-exchange rule that decided (``""``: none)
    exchange: str = ""


def unauthorized() -> ApiError:
    """kube-apiserver's 401 ``Status``."""
    return ApiError(401, "Unauthorized", "Unauthorized")


def agent_forbidden(identity: Identity, where: str) -> ApiError:
    """The 403 of an identity with an agent's name or group (``where``: what it asked for)."""
    return ApiError(
        403,
        f'forbidden: User "{identity.user}" cannot reach {where}: the agent user name '
        "prefix and group are reserved for karpor agents, which only open tunnels",
        "Forbidden",
    )


@dataclass(frozen=True, slots=True)
class Peer:
    """What a connection's client certificate proves (decided once per connection)."""

    #: the identity of a valid gateway-CA certificate (``None``: none)
    identity: Identity | None = None
    serial: int = 0
    not_before: datetime.datetime | None = None
    #: the certificate's ``notAfter`` (seconds since the epoch)
    not_after: float = 0.0
    #: a certificate was presented that no enabled authenticator accepts
    rejected: bool = False
    #: the CN of a certificate from the requestheader CA (``None``: none)
    front_proxy: str | None = None


NO_PEER = Peer()


@dataclass(frozen=True, slots=True)
class Authorized:
    """The outcome of :meth:`Access.authorize` for one cluster request."""

    #: the request's policy attributes (``None`` when nobody needed them)
    attrs: Attributes | None
    #: the identity sent upstream in ``Impersonate-*`` headers (``None``: none)
    upstream: Identity | None
    #: the identity-exchange rule that decided, if any
    exchange_rule: str = ""


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _load_initial(path: str, load: Callable[[str], _T], initial: _T) -> ReloadingFile[_T]:
    file = ReloadingFile(path, load, initial)
    error = file.poll(float("-inf"))
    if error is not None:
        raise AccessError(error)
    return file


class Access:
    """Authentication and authorization of the front (see the module docstring)."""

    def __init__(
        self,
        *,
        certificates: CertificateAuthenticator | None = None,
        revocations: ReloadingFile[RevocationList] | None = None,
        tokens: ReloadingFile[TokenFile] | None = None,
        front_proxy_ca: Sequence[bytes] = (),
        request_header: RequestHeaderConfig | None = None,
        anonymous: bool = False,
        policy: ReloadingFile[Policy] | None = None,
        clock: Callable[[], float] | None = None,
        audit: bool = False,
        oidc: OidcAuthenticator | None = None,
    ) -> None:
        import time  # noqa: PLC0415

        self._certificates = certificates
        self._revocations = revocations
        self._tokens = tokens
        self._front_proxy = (
            CertificateAuthenticator(front_proxy_ca)
            if request_header is not None and front_proxy_ca
            else None
        )
        self._request_header = request_header or RequestHeaderConfig()
        self.anonymous = anonymous
        self._policy = policy
        self._clock = clock or time.time
        #: OpenID providers' tokens (``authentication.jwt``; ``None``: none configured)
        self.oidc = oidc
        #: whether the audit log needs every request's attributes
        self.audit = audit
        names, prefixes = self._request_header.header_names() if request_header else ((), ())
        #: request header names (lower-case bytes) never forwarded besides the built-in ones
        self.drop_names = frozenset(n.encode("latin-1") for n in names)
        #: request header name prefixes never forwarded besides the built-in ones
        self.drop_prefixes = tuple(p.encode("latin-1") for p in prefixes)
        #: what the next :meth:`poll` logs first (the token file's bad records at start-up)
        self._notes: list[tuple[str, str]] = _skipped(tokens.value) if tokens is not None else []

    @classmethod
    def from_settings(
        cls,
        authentication: AuthenticationSettings,
        authorization: AuthorizationSettings,
        gateway_ca_pem: bytes,
        state_dir: Path,
        audit: bool = False,
        serving_cert_pem: bytes | None = None,
    ) -> Access:
        """Build from the settings, loading every file once (blocking; at
        start-up).  Raises :class:`AccessError` for a file that cannot be used.
        ``serving_cert_pem``: the gateway's serving certificate, whose key is
        never accepted as a client's."""
        tokens = None
        if authentication.token_file:
            tokens = _load_initial(authentication.token_file, load_token_file, _EMPTY_TOKENS)
        policy = None
        if authorization.policy_file:
            policy = _load_initial(authorization.policy_file, load_policy, ALLOW_ALL)
        revocations = _load_initial(
            str(state_dir / REVOKED_FILE), load_revocations, RevocationList()
        )
        front_ca: list[bytes] = []
        header = authentication.request_header
        # fromCluster: the CA comes later (set_front_proxy; karpor.auth.frontproxysource)
        if header is not None and header.from_cluster is None:
            try:
                front_ca = [Path(header.client_ca_file).read_bytes()]
                CertificateAuthenticator(front_ca)
            except OSError as exc:
                raise AccessError(
                    f"requestHeader.clientCAFile {header.client_ca_file}: cannot read: "
                    f"{exc.strerror or exc}"
                ) from None
            except ValueError:
                raise AccessError(
                    f"requestHeader.clientCAFile {header.client_ca_file}: no PEM certificate"
                ) from None
        refused = (
            [public_key_der(x509.load_pem_x509_certificate(serving_cert_pem))]
            if serving_cert_pem is not None
            else []
        )
        return cls(
            certificates=(
                CertificateAuthenticator([gateway_ca_pem], refused)
                if authentication.client_certificates
                else None
            ),
            revocations=revocations,
            tokens=tokens,
            front_proxy_ca=front_ca,
            request_header=header.config if header is not None else None,
            anonymous=authentication.anonymous,
            policy=policy,
            audit=audit,
            oidc=OidcAuthenticator(authentication.jwt) if authentication.jwt else None,
        )

    def set_front_proxy(self, ca_pems: Sequence[bytes], config: RequestHeaderConfig) -> None:
        """Trust front-proxy certificates of ``ca_pems`` asserting identities as
        ``config`` says, from now on (``requestHeader.fromCluster``).  Set it
        before the front is built: the front strips the header names it had then."""
        self._front_proxy = CertificateAuthenticator(ca_pems)
        self._request_header = config
        names, prefixes = config.header_names()
        self.drop_names = frozenset(n.encode("latin-1") for n in names)
        self.drop_prefixes = tuple(p.encode("latin-1") for p in prefixes)

    # -- reloading ------------------------------------------------------------------

    def files(self) -> list[ReloadingFile[Any]]:
        """The files this access reloads."""
        return [f for f in (self._tokens, self._policy, self._revocations) if f is not None]

    def poll(self, now: float) -> list[tuple[str, str]]:
        """Re-check the files; ``(level, message)`` pairs to log: a file
        that failed to load (the last good one stays) or was reloaded."""
        notes, self._notes = self._notes, []
        for file in self.files():
            before = file.value
            error = file.poll(now)
            if error is not None:
                notes.append(("warn", f"{error} (keeping the last good version)"))
            elif file.value is not before:
                notes.append(("info", f"reloaded {file.path}"))
                notes += _skipped(file.value)
        return notes

    @property
    def policy(self) -> Policy:
        """The current policy (:data:`ALLOW_ALL` without a policy file)."""
        return self._policy.value if self._policy is not None else ALLOW_ALL

    # -- authentication -----------------------------------------------------------

    def peer(self, cert: crypto.X509 | None) -> Peer:
        """What the connection's client certificate proves (once per connection)."""
        certificates = self._certificates
        identity = certificates.identify(cert) if certificates is not None else None
        if cert is None:
            return NO_PEER if identity is None else Peer(identity, not_after=float("inf"))
        parsed = cert.to_cryptography()
        front_proxy = None
        if self._front_proxy is not None and self._front_proxy.identify_certificate(parsed):
            front_proxy = _common_name(parsed) or ""
        return Peer(
            identity=identity,
            serial=parsed.serial_number,
            not_before=parsed.not_valid_before_utc,
            not_after=parsed.not_valid_after_utc.timestamp(),
            rejected=identity is None and front_proxy is None and certificates is not None,
            front_proxy=front_proxy,
        )

    def authenticate(self, peer: Peer, headers: Sequence[Header]) -> Identity:
        """The caller of one request (see the module docstring); raises a 401."""
        rejected = peer.rejected
        identity = peer.identity
        if identity is not None:
            revocations = self._revocations
            if self._clock() <= peer.not_after and (
                revocations is None
                or not revocations.value.is_revoked(peer.serial, identity.user, peer.not_before)
            ):
                return identity
            rejected = True
        if peer.front_proxy is not None:
            asserted = authenticate_headers(self._request_header, peer.front_proxy, headers)
            if asserted is not None:
                return asserted
        bearer = _bearer(headers)
        if bearer is not None:
            tokens = self._tokens
            found = tokens.value.authenticator.identify(bearer) if tokens is not None else None
            if found is not None:
                return found
            oidc = self.oidc
            if oidc is not None:
                try:
                    found = oidc.identify(bearer, self._clock())
                except JwtError as exc:
                    # why, in general terms; never the token
                    raise ApiError(401, f"Unauthorized: {exc}", "Unauthorized") from None
                if found is not None:
                    return found
            rejected = True
        if rejected or not self.anonymous:
            raise unauthorized()
        return ANONYMOUS

    def try_authenticate(self, peer: Peer, headers: Sequence[Header]) -> Identity | None:
        """As :meth:`authenticate`, ``None`` instead of a 401 (public paths)."""
        try:
            return self.authenticate(peer, headers)
        except ApiError:
            return None

    def identify_token(self, token: str) -> Identity | None:
        """The identity of a token of the token file (``karpor kubeconfig --token``)."""
        return self._tokens.value.authenticator.identify(token) if self._tokens else None

    # -- authorization ------------------------------------------------------------

    def authorize_path(self, identity: Identity, verb: str, path: str) -> None:
        """Whether ``identity`` may ``verb`` the gateway's own ``path``
        (:meth:`karpor.auth.policy.Policy.allows_path`); raises the 403."""
        if is_reserved(identity):
            raise Forbidden(
                agent_forbidden(identity, f'path "{path}"'),
                Attributes(verb=verb, is_resource_request=False, path=path),
            )
        decision = self.policy.allows_path(identity, verb, path)
        if not decision.allowed:
            raise Forbidden(decision.error(), decision.attrs)

    def reaches(self, identity: Identity, cluster: Cluster) -> bool:
        """Whether ``identity`` may reach ``cluster`` at all (``kubectl get clusters``)."""
        if is_reserved(identity):
            return False
        policy = self.policy
        if not policy.enforcing:
            return identity.user != ANONYMOUS_USER
        return policy.reaches(identity, cluster)

    def granted_namespaces(
        self, identity: Identity, cluster: Cluster, verb: str
    ) -> tuple[list[str], list[str]]:
        """The namespaces (names, patterns) where rules restricted to
        namespaces let ``identity`` ``verb`` on ``cluster``
        (:meth:`karpor.auth.policy.Policy.granted_namespaces`)."""
        if is_reserved(identity):
            return [], []
        return self.policy.granted_namespaces(identity, cluster, verb)

    def authorize(
        self,
        caller: Identity,
        cluster: Cluster,
        method: bytes,
        target: bytes,
        headers: Sequence[Header],
    ) -> Authorized:
        """Authorize one request for ``cluster`` (``target``: the upstream
        path and query, raw); raises the 403 (or 400) ``Status``."""
        return self._authorize(self.policy, caller, cluster, method, target, headers)

    def unknown_cluster(
        self,
        caller: Identity,
        name: str,
        method: bytes,
        target: bytes,
        headers: Sequence[Header],
    ) -> ApiError:
        """The error for a request to a cluster ``name`` that does not exist:
        the 404 for a caller who may learn that
        (:meth:`karpor.auth.policy.Policy.names`), else exactly the 403 a
        cluster the caller may not reach gets (a 400 where the request is
        malformed), so that nobody learns which names exist by probing."""
        policy = self.policy
        if self.names(caller, name):
            return not_found(name)
        denying = policy if not policy.enforcing else _NO_RULES
        try:
            self._authorize(denying, caller, Cluster(name, ""), method, target, headers)
        except ApiError as error:
            return error
        raise AssertionError("a policy without rules granted a request")  # pragma: no cover

    def _authorize(
        self,
        policy: Policy,
        caller: Identity,
        cluster: Cluster,
        method: bytes,
        target: bytes,
        headers: Sequence[Header],
    ) -> Authorized:
        requested = _impersonation(headers)
        attrs: Attributes | None = None
        if policy.enforcing or requested is not None or self.audit:
            attrs = request_attributes(method, target)
        if is_reserved(caller) or (requested is not None and is_reserved(requested)):
            shown = caller if is_reserved(caller) else requested
            assert shown is not None
            raise Forbidden(agent_forbidden(shown, f'cluster "{cluster.name}"'), attrs)
        if not policy.enforcing and caller.user == ANONYMOUS_USER:
            raise Forbidden(
                ApiError(
                    403,
                    f'forbidden: User "{ANONYMOUS_USER}" cannot reach cluster "{cluster.name}" '
                    "(no access policy)",
                    "Forbidden",
                ),
                attrs,
            )
        if requested is not None:
            # without a policy file every authenticated caller may do
            # everything, impersonate included: as with a policy granting it
            assert attrs is not None
            granted = authorize_impersonation(policy, caller, cluster, requested)
            if not granted.allowed:
                raise Forbidden(granted.error(), attrs)
            decision = policy.allows(requested, cluster, attrs)
            if not decision.allowed:
                raise Forbidden(decision.error(), attrs)
            return Authorized(attrs, upstream_identity(caller, cluster, None, requested))
        if policy.enforcing:
            assert attrs is not None
            decision = policy.allows(caller, cluster, attrs)
            if not decision.allowed:
                raise Forbidden(decision.error(), attrs)
        exchange = policy.exchange(caller, cluster) if policy.exchange_rules else None
        return Authorized(
            attrs,
            upstream_identity(caller, cluster, exchange),
            exchange.rule if exchange is not None else "",
        )

    def reviewer(
        self, caller: Identity, cluster: Cluster, headers: Sequence[Header]
    ) -> Reviewer | None:
        """Who the reviews a caller asks about itself on ``cluster``
        (``kubectl auth whoami``, ``auth can-i``) are about (the caller, or
        whom its ``Impersonate-*`` headers ask for), and whom the cluster
        sees: ``None`` when the caller may not reach the cluster at all or
        may not impersonate whom it asks for (the request is then authorized
        as any other, and refused)."""
        policy = self.policy
        if not policy.enforcing and caller.user == ANONYMOUS_USER:
            return None
        requested = _impersonation(headers)
        exchange = None
        upstream: Identity | None
        if requested is not None:
            if not authorize_impersonation(policy, caller, cluster, requested).allowed:
                return None
            effective, upstream = requested, requested
        else:
            effective = caller
            exchange = policy.exchange(caller, cluster) if policy.exchange_rules else None
            upstream = upstream_identity(caller, cluster, exchange)
        # (a caller granted impersonation reaches the cluster: it is asked about
        # whom it impersonates, who may be allowed nothing there)
        if policy.enforcing and requested is None and not policy.reaches(caller, cluster):
            return None
        return Reviewer(effective, upstream, exchange.rule if exchange is not None else "")

    def shows_endpoint(self, identity: Identity, cluster: Cluster) -> bool:
        """Whether ``identity`` may see where ``cluster`` is
        (:meth:`karpor.auth.policy.Policy.shows_endpoint`)."""
        return not is_reserved(identity) and self.policy.shows_endpoint(identity, cluster)

    def names(self, identity: Identity, name: str) -> bool:
        """Whether ``identity`` may learn that no cluster ``name`` exists
        (:meth:`karpor.auth.policy.Policy.names`)."""
        return not is_reserved(identity) and self.policy.names(identity, name)


#: the access settings' record in the state directory (for ``karpor kubeconfig``)
ACCESS_RECORD_FILE = "access.json"


def write_access_record(
    state_dir: Path,
    authentication: AuthenticationSettings,
    authorization: AuthorizationSettings,
) -> None:
    """Record where the token and policy files are (absolute paths), so
    ``karpor kubeconfig`` filters contexts as the gateway authorizes."""
    doc = {
        "tokenFile": os.path.abspath(authentication.token_file)
        if authentication.token_file
        else None,
        "policyFile": os.path.abspath(authorization.policy_file)
        if authorization.policy_file
        else None,
    }
    write_atomically(str(state_dir / ACCESS_RECORD_FILE), json.dumps(doc, indent=2) + "\n")


def read_access_record(state_dir: Path) -> tuple[str | None, str | None]:
    """``(token file, policy file)`` as the gateway recorded them (``None``: none)."""
    try:
        doc = json.loads((state_dir / ACCESS_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    tokens, policy = doc.get("tokenFile"), doc.get("policyFile")
    return (
        tokens if isinstance(tokens, str) else None,
        policy if isinstance(policy, str) else None,
    )


def request_attributes(method: bytes, target: bytes) -> Attributes:
    """The policy attributes of a request for a cluster (raw upstream target)."""
    path, _, query = target.partition(b"?")
    try:
        info = parse_request_info(
            method.decode("latin-1"), path.decode("latin-1"), query.decode("latin-1")
        )
    except RequestInfoError as exc:
        raise ApiError(400, str(exc), "BadRequest") from None
    return attributes(info)


def _skipped(value: object) -> list[tuple[str, str]]:
    """The bad records a token file load skipped, to log (no token in them)."""
    if not isinstance(value, TokenFile):
        return []
    return [("warn", f"{problem} (record skipped)") for problem in value.problems]


def _bearer(headers: Sequence[Header]) -> str | None:
    """The bearer token of the first ``Authorization`` header, else, on a
    WebSocket upgrade, the one in ``Sec-WebSocket-Protocol``
    (:func:`~karpor.http.headers.websocket_bearer`, as kube-apiserver
    accepts from browsers); ``None``: none."""
    protocols = upgrade = None
    for name, value in headers:
        size = len(name)
        if size == 13 and name.lower() == b"authorization":
            if value[:7].lower() != _BEARER:
                return ""  # another scheme: a credential no authenticator accepts
            return value[7:].strip().decode("latin-1")
        if size == 22 and protocols is None and name.lower() == b"sec-websocket-protocol":
            protocols = value
        elif size == 7 and name.lower() == b"upgrade":
            upgrade = value
    if protocols is not None and upgrade is not None and upgrade.strip().lower() == b"websocket":
        return websocket_bearer(protocols)
    return None


def _impersonation(headers: Sequence[Header]) -> Identity | None:
    for name, _ in headers:
        if name[:12].lower() == b"impersonate-":
            return requested_identity(headers)
    return None
