"""Who is calling: the identity an authenticated request carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

AUTHENTICATED = "system:authenticated"
ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED = "system:unauthenticated"


@dataclass(frozen=True)
class IssuedBy:
    """Who vouched for an identity a bearer token of an OpenID provider
    proved: the provider (the token's ``iss``) and the token's ``sub``.
    For the audit log; never the token."""

    issuer: str
    subject: str


@dataclass(frozen=True)
class Identity:
    """A caller as Kubernetes sees one: user name, uid, groups and extra.

    ``client_certificate`` says how the identity was proven, not who it is:
    ``True`` only for one a client certificate of the gateway CA proved
    (:class:`karpor.auth.authenticate.CertificateAuthenticator`); identities
    asserted by front-proxy headers, a token or ``Impersonate-*`` headers
    never carry it.  Only :func:`karpor.auth.agentidentity.tunnel_cluster`
    reads it (an agent must prove itself by certificate), so it takes no
    part in equality.  ``issued_by`` names the OpenID provider and subject
    of an identity a provider's token proved (``None`` for every other
    way); it takes no part in equality either.
    """

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    client_certificate: bool = field(default=False, compare=False)
    issued_by: IssuedBy | None = field(default=None, compare=False)

    def with_authenticated(self) -> Identity:
        """The identity with ``system:authenticated`` added, as the apiserver does."""
        if AUTHENTICATED in self.groups or self.user == ANONYMOUS_USER:
            return self
        return Identity(
            self.user,
            (*self.groups, AUTHENTICATED),
            self.uid,
            self.extra,
            self.client_certificate,
            self.issued_by,
        )
