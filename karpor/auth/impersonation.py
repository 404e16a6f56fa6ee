"""Impersonation: the identity a cluster sees, and callers who impersonate (sans-IO).

**Toward a cluster.** :func:`upstream_identity` decides whom the gateway
impersonates on a cluster, in this order:

1. a caller who impersonates someone (``kubectl --as``) and is granted the
   ``impersonate`` verb: the identity asked for, exactly;
2. the policy's identity exchange (:meth:`karpor.auth.policy.Policy.exchange`):
   ``Privileged`` -> nobody (the gateway's own credential), ``StaticMapping``
   -> its target;
3. a cluster with ``spec.impersonate: true``: the caller;
4. otherwise nobody.

:func:`impersonation_headers` writes that identity as client-go does:
``Impersonate-User``, one ``Impersonate-Group`` per group (never
``system:authenticated``, which the cluster adds itself),
``Impersonate-Uid`` when there is one, and ``Impersonate-Extra-<key>`` per
extra value, the key percent-encoded where it is not an HTTP token
character (and ``%`` itself), as client-go's ``headerKeyEscape`` does.

**From a caller.** The request header rewrite drops every ``Impersonate-*``
header a caller sends; :func:`requested_identity` reads them first.  The
caller must then pass :func:`impersonation_checks` (one ``impersonate``
attributes per user, group, uid and extra value, as kube's impersonation
filter checks them) against the policy; a denial is a 403.  When granted,
the request itself is authorized as the impersonated identity and
forwarded with it.  Without a policy file (:data:`karpor.auth.policy.ALLOW_ALL`)
every check passes for an authenticated caller, so ``kubectl --as=jane``
reaches the cluster as ``jane`` (whose RBAC then decides), never silently as
the gateway's own credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote

from karpor.auth.identity import ANONYMOUS_USER, AUTHENTICATED, UNAUTHENTICATED, Identity
from karpor.auth.policy import Attributes, Decision, Exchange, Policy
from karpor.auth.requestheader import HeaderPair
from karpor.config.model import Cluster
from karpor.kube.status import ApiError

Header = tuple[bytes, bytes]

_USER = "impersonate-user"
_GROUP = "impersonate-group"
_UID = "impersonate-uid"
_EXTRA = "impersonate-extra-"
_SA_PREFIX = "system:serviceaccount:"

# HTTP token characters (RFC 7230), except '%', which is escaped
_KEY_SAFE = frozenset(
    b"!#$&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def upstream_identity(
    caller: Identity,
    cluster: Cluster,
    exchange: Exchange | None,
    impersonated: Identity | None = None,
) -> Identity | None:
    """The identity to impersonate on ``cluster`` (``None``: no impersonation).

    ``impersonated`` is the identity a caller asked for and was granted.
    """
    if impersonated is not None:
        return impersonated
    if exchange is not None:
        return None if exchange.privileged else exchange.target
    return caller if cluster.impersonate else None


def escape_extra_key(key: str) -> str:
    """An extra key as a header name suffix (client-go's ``headerKeyEscape``)."""
    out: list[str] = []
    for byte in key.encode("utf-8"):
        out.append(chr(byte) if byte in _KEY_SAFE else f"%{byte:02X}")
    return "".join(out)


def impersonation_headers(identity: Identity | None) -> list[Header]:
    """The ``Impersonate-*`` headers that make a cluster see ``identity``
    (none for ``None``), for the ``identity`` of an
    :class:`~karpor.upstream.request.UpstreamRequest`."""
    if identity is None:
        return []
    headers: list[Header] = [(b"Impersonate-User", identity.user.encode("utf-8"))]
    for group in identity.groups:
        if group != AUTHENTICATED:
            headers.append((b"Impersonate-Group", group.encode("utf-8")))
    if identity.uid:
        headers.append((b"Impersonate-Uid", identity.uid.encode("utf-8")))
    for key in sorted(identity.extra):
        name = b"Impersonate-Extra-" + escape_extra_key(key).encode("ascii")
        for value in identity.extra[key]:
            headers.append((name, value.encode("utf-8")))
    return headers


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def requested_identity(headers: Sequence[HeaderPair]) -> Identity | None:
    """The identity a caller's ``Impersonate-*`` headers ask for, or ``None``
    when it sends none.

    Read as kube's impersonation filter reads them: the first
    ``Impersonate-User``; every ``Impersonate-Group``; the first
    ``Impersonate-Uid``; ``Impersonate-Extra-<key>`` with the key lower-cased
    and percent-decoded.  A service account user without groups gets its
    service account groups; every user but ``system:anonymous`` gets
    ``system:authenticated`` (the anonymous one ``system:unauthenticated``).
    Raises :class:`ApiError` (500, as kube answers) for groups, uid or extra
    without a user.
    """
    users: list[str] = []
    groups: list[str] = []
    uids: list[str] = []
    extra: dict[str, tuple[str, ...]] = {}
    for raw_name, raw_value in headers:
        name = _text(raw_name).lower()
        if not name.startswith("impersonate-"):
            continue
        value = _text(raw_value)
        if name == _USER:
            users.append(value)
        elif name == _GROUP:
            groups.append(value)
        elif name == _UID:
            uids.append(value)
        elif name.startswith(_EXTRA) and len(name) > len(_EXTRA):
            key = unquote(name[len(_EXTRA) :], errors="surrogateescape")
            extra[key] = (*extra.get(key, ()), value)
    if not users:
        if groups or uids or extra:
            raise ApiError(
                500,
                "Internal error occurred: requested impersonation of groups, uid or extra "
                "without impersonating a user",
                "InternalError",
            )
        return None
    user = users[0]
    if not groups and user.startswith(_SA_PREFIX):
        namespace = user[len(_SA_PREFIX) :].partition(":")[0]
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    if user == ANONYMOUS_USER:
        if UNAUTHENTICATED not in groups:
            groups.append(UNAUTHENTICATED)
    elif AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return Identity(user=user, groups=tuple(groups), uid=uids[0] if uids else "", extra=extra)


def impersonation_checks(requested: Identity) -> list[Attributes]:
    """The ``impersonate`` attributes a caller needs to become ``requested``:
    one for the user (``serviceaccounts`` in its namespace for a service
    account, else ``users``), one per group (but the groups every identity,
    or every service account, carries anyway), one for the uid and one per
    extra value, as kube's impersonation filter checks them."""
    checks: list[Attributes] = []
    implied = {AUTHENTICATED, UNAUTHENTICATED}
    if requested.user.startswith(_SA_PREFIX):
        namespace, _, name = requested.user[len(_SA_PREFIX) :].partition(":")
        checks.append(
            Attributes(
                verb="impersonate", resource="serviceaccounts", namespace=namespace, name=name
            )
        )
        implied |= {"system:serviceaccounts", f"system:serviceaccounts:{namespace}"}
    else:
        checks.append(Attributes(verb="impersonate", resource="users", name=requested.user))
    for group in requested.groups:
        if group not in implied:
            checks.append(Attributes(verb="impersonate", resource="groups", name=group))
    if requested.uid:
        checks.append(
            Attributes(
                verb="impersonate",
                resource="uids",
                api_group="authentication.k8s.io",
                name=requested.uid,
            )
        )
    for key in sorted(requested.extra):
        for value in requested.extra[key]:
            checks.append(
                Attributes(
                    verb="impersonate",
                    resource="userextras",
                    subresource=key,
                    api_group="authentication.k8s.io",
                    name=value,
                )
            )
    return checks


def authorize_impersonation(
    policy: Policy, caller: Identity, cluster: Cluster, requested: Identity
) -> Decision:
    """Whether ``caller`` may impersonate ``requested`` on ``cluster``: the
    first denial among :func:`impersonation_checks`, else the last grant."""
    decision = Decision(True)
    for attrs in impersonation_checks(requested):
        decision = policy.allows(caller, cluster, attrs)
        if not decision.allowed:
            return decision
    return decision
