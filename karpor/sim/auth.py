"""Authentication, impersonation, authorization and the self-subject reviews
in the simulator.

A simulated cluster accepts two credentials, as a kube-apiserver with
``--anonymous-auth=false`` does: a client certificate issued by its CA
(``CN`` = user, each ``O`` = a group) or its bearer token.  Anything else is
answered ``401 Unauthorized``.  Without a policy every authenticated
caller may do everything, impersonation included: ``Impersonate-User``,
``Impersonate-Group``, ``Impersonate-Uid`` and ``Impersonate-Extra-*``
replace the caller's identity as kube's impersonation filter does, so the
identity a gateway forwards is the one the cluster sees (``kubectl auth
whoami`` shows it).

With a policy (``karpor sim --policy FILE``, :class:`Authorizer`) the
cluster authorizes as kube RBAC would with those rules, and answers
``SelfSubjectAccessReview`` / ``SelfSubjectRulesReview`` (``kubectl auth
can-i``) from them; without one everything is allowed (and said so).

Everything here is sans-IO: headers in, an :class:`Identity` out.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from OpenSSL import crypto

from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import ANONYMOUS_USER, AUTHENTICATED, UNAUTHENTICATED, Identity
from karpor.auth.impersonation import authorize_impersonation
from karpor.auth.policy import ALLOW_ALL, Policy, attributes
from karpor.auth.reviews import access_decision, policy_rules
from karpor.config.model import Cluster
from karpor.kube.requestinfo import RequestInfoError, parse_request_info
from karpor.kube.reviews import AccessQuery, RulesStatus
from karpor.kube.status import ApiError

#: the identity the bearer token stands for: a service account, since the
#: Cluster files the simulator writes call the token a ServiceAccountToken
DEFAULT_TOKEN_IDENTITY = Identity(
    user="system:serviceaccount:kube-system:karpor",
    groups=("system:serviceaccounts", "system:serviceaccounts:kube-system"),
)

#: API versions of ``authentication.k8s.io`` serving ``selfsubjectreviews``
#: (kubectl 1.27 asks v1beta1 then v1alpha1; 1.28+ ask v1 first)
SELF_SUBJECT_REVIEW_VERSIONS = ("v1", "v1beta1", "v1alpha1")

_SA_PREFIX = "system:serviceaccount:"
_EXTRA_PREFIX = "impersonate-extra-"


class Authenticator:
    """Decides who a request comes from: client certificate first, then token."""

    def __init__(
        self,
        token: str,
        ca_certs_pem: Sequence[bytes],
        token_identity: Identity = DEFAULT_TOKEN_IDENTITY,
    ) -> None:
        self._token = token.encode()
        self._certificates = CertificateAuthenticator(ca_certs_pem)
        self._token_identity = token_identity.with_authenticated()

    def __repr__(self) -> str:
        return f"Authenticator(token_user={self._token_identity.user!r})"

    def authenticate(self, authorization: str | None, peer: crypto.X509 | None) -> Identity | None:
        """The caller's identity, or ``None`` (answer 401).

        ``authorization`` is the ``Authorization`` header, ``peer`` the
        client certificate the TLS handshake received (any: it is checked here).
        """
        identity = self._certificates.identify(peer)
        if identity is not None:
            return identity.with_authenticated()
        token = bearer_token(authorization)
        if token is not None and hmac.compare_digest(token.encode(), self._token):
            return self._token_identity
        return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def impersonate(identity: Identity, headers: Mapping[str, Sequence[str]]) -> Identity:
    """The effective identity after the ``Impersonate-*`` headers.

    ``headers`` maps lower-cased names to all their values.  Without
    impersonation headers the caller's ``identity`` is returned unchanged.
    Raises :class:`ApiError` (500, as kube's filter answers) when groups,
    uid or extra are asked for without a user.
    """
    users = headers.get("impersonate-user", ())
    groups = [g for g in headers.get("impersonate-group", ())]
    uids = headers.get("impersonate-uid", ())
    extra: dict[str, tuple[str, ...]] = {}
    for name, values in headers.items():
        if name.startswith(_EXTRA_PREFIX) and len(name) > len(_EXTRA_PREFIX):
            key = unquote(name[len(_EXTRA_PREFIX) :])
            extra[key] = (*extra.get(key, ()), *values)
    if not users:
        if groups or uids or extra:
            asked = [f"groups={groups}"] if groups else []
            asked += [f"uid={uids[0]}"] if uids else []
            asked += [f"extra={sorted(extra)}"] if extra else []
            raise ApiError(
                500,
                f"Internal error occurred: requested [{' '.join(asked)}] "
                "without impersonating a user",
                "InternalError",
            )
        return identity
    user = users[0]
    if not groups and user.startswith(_SA_PREFIX):
        namespace = user[len(_SA_PREFIX) :].partition(":")[0]
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    if user != ANONYMOUS_USER:
        if not any(g in (AUTHENTICATED, UNAUTHENTICATED) for g in groups):
            groups.append(AUTHENTICATED)
    elif UNAUTHENTICATED not in groups:
        groups.append(UNAUTHENTICATED)
    return Identity(user=user, groups=tuple(groups), uid=uids[0] if uids else "", extra=extra)


def self_subject_review(api_version: str, identity: Identity) -> dict[str, Any]:
    """The ``SelfSubjectReview`` a kube-apiserver answers to ``identity``.

    ``api_version`` is the version of ``authentication.k8s.io`` the review
    was created in (see :data:`SELF_SUBJECT_REVIEW_VERSIONS`).
    """
    user_info: dict[str, Any] = {"username": identity.user}
    if identity.uid:
        user_info["uid"] = identity.uid
    if identity.groups:
        user_info["groups"] = list(identity.groups)
    if identity.extra:
        user_info["extra"] = {k: list(v) for k, v in identity.extra.items()}
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": f"authentication.k8s.io/{api_version}",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user_info},
    }


#: the group that may do everything whatever the policy says (kube's superusers)
MASTERS = "system:masters"
#: API versions of ``authorization.k8s.io`` serving the self-subject reviews
AUTHORIZATION_VERSIONS = ("v1",)


class Authorizer:
    """What a simulated cluster lets its users do: everything without a
    policy; with one, a karpor policy (:mod:`karpor.auth.policy`, the
    format of ``authorization.policyFile``, with ``clusters: ["*"]``) is
    the cluster's RBAC.  Members of ``system:masters`` may do everything,
    and every authenticated user may create the reviews about itself
    (kube's ``system:basic-user``).  A user who impersonates someone needs
    the ``impersonate`` verb, as in kube."""

    def __init__(self, policy: Policy | None = None, cluster: str = "sim") -> None:
        self.policy = policy
        self._cluster = Cluster(cluster, "")

    def __repr__(self) -> str:
        return f"Authorizer(policy={self.policy is not None})"

    def _policy(self, identity: Identity) -> Policy:
        if self.policy is None or MASTERS in identity.groups:
            return ALLOW_ALL
        return self.policy

    def check(
        self, caller: Identity, identity: Identity, method: str, path: str, query: str
    ) -> None:
        """Raise the 403 ``caller`` (as ``identity`` once impersonated) gets for
        the request, if any."""
        if self.policy is None:
            return
        if identity is not caller:
            granted = authorize_impersonation(self._policy(caller), caller, self._cluster, identity)
            if not granted.allowed:
                raise granted.error()
        try:
            info = parse_request_info(method, path, query)
        except RequestInfoError:
            return  # the router answers it
        attrs = attributes(info)
        if (attrs.api_group, attrs.resource) in _REVIEWS and attrs.verb == "create":
            return
        decision = self._policy(identity).allows(identity, self._cluster, attrs)
        if not decision.allowed:
            raise decision.error()

    def access_review(self, identity: Identity, query: AccessQuery) -> tuple[bool, str]:
        """``(allowed, reason)`` of a ``SelfSubjectAccessReview``."""
        if self.policy is None:
            return True, ""
        allowed, reason = access_decision(self._policy(identity), identity, self._cluster, query)
        return allowed, reason.replace("karpor: ", "RBAC: ", 1)

    def rules_review(self, identity: Identity, namespace: str) -> RulesStatus:
        """The rules of a ``SelfSubjectRulesReview`` of ``namespace``."""
        return policy_rules(self._policy(identity), identity, self._cluster, namespace)


_REVIEWS = frozenset(
    {
        ("authentication.k8s.io", "selfsubjectreviews"),
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectrulesreviews"),
    }
)
