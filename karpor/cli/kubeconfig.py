"""``karpor kubeconfig``: issue a user a certificate and write their kubeconfig.

::

    karpor kubeconfig --state-dir DIR --user U [--group G]... --server https://HOST:PORT
                      [-o FILE] [--clusters-dir DIR] [--ttl 90d] [--config FILE]
    karpor kubeconfig --state-dir DIR --token TOKEN [...]
    karpor kubeconfig --state-dir DIR --server URL --oidc-issuer URL --oidc-client-id ID
                      [--user NAME] [--group G]... [--oidc-extra-scope S]...
                      [--oidc-device-code] [--oidc-listen-address HOST:PORT]
                      [--oidc-certificate-authority FILE] [-o FILE]
    (each form also takes [--routing host|path] [--set NAME=SELECTOR]...)

The client certificate is signed by the gateway CA kept in ``--state-dir``
(CN = user, one O per group).  The kubeconfig
(:func:`karpor.auth.kubeconfig.build_kubeconfig`) has one context per
cluster of the clusters directory (``--clusters-dir``, else the one the
gateway recorded in the state directory when it last started) and the
``karpor`` context; when the user reaches a cluster, also the fan-out
context ``all`` (every cluster they may reach, at once: ``clusters/*/proxy``)
and one context per ``--set NAME=SELECTOR`` (the clusters whose labels match
the label selector: ``clusters/SELECTOR/proxy``).  Fan-out contexts are
always written by path, whatever ``--routing`` says (a host name cannot
hold ``*`` or a selector).  ``--routing`` says how a cluster's context reaches
it: ``path`` (the default, :data:`DEFAULT_ROUTING`) writes the cluster's
proxy path as server; ``host`` writes ``server: https://GATEWAY`` and
``tls-server-name: NAME.<suffix>`` (the gateway's ``hostRouting.suffix``,
as recorded in the state directory or read from ``--config``), so request
paths are the cluster's own (``kubectl get --raw /version``, ``kubectl
proxy``).  It is written with mode 0600 to ``-o FILE``, or to
standard output (no ``-o``, or ``-o -``); a summary goes to standard error.

Contexts are written only for the clusters the user may reach under the
gateway's access policy: the ``authorization.policyFile`` of ``--config``,
else the one the gateway recorded in the state directory
(:func:`karpor.auth.access.read_access_record`); without a policy, every
cluster.  ``--token TOKEN`` writes a kubeconfig for a user of the token file
instead (no certificate is issued; the identity, looked up in the token
file, decides the contexts).  The token never appears in a message.

``--oidc-issuer URL --oidc-client-id ID`` writes a kubeconfig whose user
signs in at that OpenID provider: no certificate is issued, the user entry
(named ``--user``, default ``oidc``) runs the exec credential plugin
``karpor login`` (``client.authentication.k8s.io/v1``, ``interactiveMode:
IfAvailable``; ``karpor`` must be on the user's ``PATH``).  The identity is
the provider's to say, so the contexts are filtered by the policy only when
``--group`` names the user's groups (as the gateway maps them, prefix
included); else every cluster has one.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from cryptography import x509

from karpor.app import state
from karpor.auth.access import read_access_record
from karpor.auth.agentidentity import is_reserved
from karpor.auth.ca import CertificateAuthority, write_private
from karpor.auth.identity import Identity
from karpor.auth.kubeconfig import (
    FANOUT_CONTEXT,
    GATEWAY_CONTEXT,
    HOST_ROUTING,
    PATH_ROUTING,
    ROUTINGS,
    build_kubeconfig,
    dump_kubeconfig,
    login_exec,
    parse_duration,
)
from karpor.auth.policy import PolicyError, load_policy
from karpor.auth.tokens import TokenFileError, load_token_file
from karpor.config.directory import load_directory
from karpor.config.model import Cluster
from karpor.http.route import DEFAULT_HOST_SUFFIX
from karpor.kube.selectors import SelectorError, parse_label_selector

#: how cluster contexts reach their cluster unless ``--routing`` says.
#: Every client tested honours ``tls-server-name`` (kubectl 1.27-1.33, the
#: Python client, client-node), but kubectl keeps its discovery cache per
#: ``server`` URL: host-routed contexts share one URL, so one cluster's
#: cached resource list would answer for another (README, "Routing").
DEFAULT_ROUTING = PATH_ROUTING

DEFAULT_TTL = "90d"
#: the kubeconfig's user entry of an OIDC kubeconfig without --user
OIDC_USER = "oidc"

#: the longest label selector ``--set`` takes
MAX_SET_SELECTOR = 1024
#: a ``--set`` context name: a DNS-1123 label
_CONTEXT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: the characters that make a proxy path's cluster segment a selector
#: (:mod:`karpor.http.route`): a selector without one would name a cluster
_SELECTOR_CHARS = frozenset("=!, (")

#: who may reach which cluster (every authenticated user, until an access policy exists)
Reachable = Callable[[Identity, Cluster], bool]


def everyone(identity: Identity, cluster: Cluster) -> bool:
    """Without an access policy every user reaches every cluster."""
    return True


class CommandError(Exception):
    """A failure reported as one line on standard error (exit status 1)."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``kubeconfig`` subcommand."""
    parser = subparsers.add_parser(
        "kubeconfig",
        help="issue a client certificate and write a kubeconfig for the gateway",
        description=(
            "Issue a client certificate from the gateway CA (CN=user, O=groups) and "
            "write a kubeconfig with one context per cluster and a 'karpor' context "
            "for the gateway's own API."
        ),
    )
    parser.add_argument("--state-dir", required=True, type=Path, help="the gateway's state dir")
    parser.add_argument(
        "--user",
        help="the user name (certificate CN); with --oidc-issuer, only the name of the "
        "kubeconfig's user entry",
    )
    parser.add_argument(
        "--token",
        help="write a kubeconfig with this bearer token of the gateway's token file "
        "(no certificate is issued)",
    )
    parser.add_argument(
        "--oidc-issuer",
        help="write a kubeconfig signing in at this OpenID provider with 'karpor login' "
        "(no certificate is issued)",
    )
    parser.add_argument("--oidc-client-id", help="the client id registered at the provider")
    parser.add_argument(
        "--oidc-extra-scope",
        action="append",
        default=[],
        dest="oidc_extra_scopes",
        metavar="SCOPE",
        help="a scope 'karpor login' asks for besides openid and offline_access; repeat",
    )
    parser.add_argument(
        "--oidc-device-code",
        action="store_true",
        help="'karpor login' signs in with the device-code flow (machines without a browser)",
    )
    parser.add_argument(
        "--oidc-listen-address",
        metavar="HOST:PORT",
        help="where 'karpor login' listens for the sign-in redirect (default 127.0.0.1:8000; "
        "the provider must allow http://HOST:PORT/callback)",
    )
    parser.add_argument(
        "--oidc-certificate-authority",
        help="the PEM file of the CA of the provider's TLS, as 'karpor login' will find it",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        dest="groups",
        metavar="GROUP",
        help="a group of the user (certificate O); repeat for several",
    )
    parser.add_argument(
        "--server",
        help="the gateway's address, https://HOST:PORT (default: as the gateway recorded it)",
    )
    parser.add_argument(
        "-o", "--output", default="-", help="the kubeconfig file to write (default: stdout)"
    )
    parser.add_argument(
        "--clusters-dir",
        type=Path,
        help="the clusters directory (default: the one the gateway serves, from the state dir)",
    )
    parser.add_argument(
        "--ttl", default=DEFAULT_TTL, help="certificate lifetime, e.g. 90d, 12h (default: 90d)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="the gateway's settings file, for its policy and token files "
        "(default: as the gateway recorded them in the state dir)",
    )
    parser.add_argument(
        "--routing",
        choices=ROUTINGS,
        help="how cluster contexts reach their cluster: host (server https://GATEWAY, "
        "tls-server-name NAME.<suffix>; request paths are the cluster's own) or path "
        f"(the cluster's proxy path as server); default: {DEFAULT_ROUTING}",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        metavar="NAME=SELECTOR",
        help="add a context NAME reading at once every cluster whose labels match the label "
        "selector SELECTOR (e.g. 'prod=env=prod', 'eu=region in (eu-1,eu-2)'); repeat",
    )
    parser.set_defaults(handler=run)


def parse_set(text: str) -> tuple[str, str]:
    """``(context name, label selector)`` of a ``--set NAME=SELECTOR``
    argument; :class:`CommandError` saying what is wrong."""
    name, eq, selector = text.partition("=")
    name, selector = name.strip(), selector.strip()
    if not eq or not name:
        raise CommandError(f"--set {text[:80]!r}: write NAME=SELECTOR (e.g. prod=env=prod)")
    if not _CONTEXT_NAME.fullmatch(name):
        raise CommandError(
            f"--set {name[:80]!r}: the context name must be a DNS-1123 label (lower-case "
            "letters, digits and '-', at most 63)"
        )
    if name in (FANOUT_CONTEXT, GATEWAY_CONTEXT):
        raise CommandError(f"--set {name}: the context name {name!r} is reserved")
    if not selector:
        raise CommandError(
            f"--set {name}=: the selector is empty (the {FANOUT_CONTEXT!r} context reads "
            "every cluster)"
        )
    if len(selector) > MAX_SET_SELECTOR:
        raise CommandError(f"--set {name}: the selector is longer than {MAX_SET_SELECTOR}")
    try:
        parse_label_selector(selector)
    except (SelectorError, ValueError) as exc:
        reason = exc.message if isinstance(exc, SelectorError) else str(exc)
        raise CommandError(f"--set {name}={selector!r}: not a label selector: {reason}") from None
    if not _SELECTOR_CHARS.intersection(selector):
        raise CommandError(
            f"--set {name}={selector!r}: a selector of a label key alone would read as a "
            f"cluster name; write a comparison (e.g. '{selector} in (a,b)', '{selector}!=x')"
        )
    return name, selector


def parse_sets(texts: Iterable[str]) -> list[tuple[str, str]]:
    """Every ``--set`` argument parsed (:func:`parse_set`); a name given twice is an error."""
    sets: list[tuple[str, str]] = []
    for text in texts:
        name, selector = parse_set(text)
        if any(name == seen for seen, _ in sets):
            raise CommandError(f"--set {name}: the context name is given twice")
        sets.append((name, selector))
    return sets


def oidc_exec(args: argparse.Namespace) -> dict[str, Any]:
    """The ``karpor login`` exec entry the ``--oidc-*`` arguments ask for."""
    issuer: str = args.oidc_issuer
    client_id: str | None = getattr(args, "oidc_client_id", None)
    if not client_id:
        raise CommandError("--oidc-issuer needs --oidc-client-id")
    if urlsplit(issuer).scheme != "https" or not urlsplit(issuer).hostname:
        raise CommandError(f"--oidc-issuer {issuer!r}: an https:// URL is required")
    ca = getattr(args, "oidc_certificate_authority", None)
    return login_exec(
        issuer,
        client_id,
        list(getattr(args, "oidc_extra_scopes", [])),
        str(Path(ca).expanduser().absolute()) if ca else None,
        bool(getattr(args, "oidc_device_code", False)),
        listen_address=getattr(args, "oidc_listen_address", None),
    )


def cluster_names(
    clusters: Iterable[Cluster], identity: Identity, reachable: Reachable = everyone
) -> list[str]:
    """The names of the clusters ``identity`` may reach, sorted."""
    return sorted(c.name for c in clusters if reachable(identity, c))


def _settings(config: Path) -> Any:
    from karpor.app.settings import SettingsError, load_settings  # noqa: PLC0415

    try:
        return load_settings(str(config))
    except SettingsError as exc:
        raise CommandError("; ".join(exc.problems)) from None


def access_files(state_dir: Path, config: Path | None) -> tuple[str | None, str | None]:
    """``(token file, policy file)`` of ``config``, else as the gateway recorded them."""
    if config is None:
        return read_access_record(state_dir)
    settings = _settings(config)
    return settings.authentication.token_file, settings.authorization.policy_file


def host_suffix(state_dir: Path, config: Path | None) -> str:
    """The gateway's ``hostRouting.suffix``: of ``config``, else as the
    gateway recorded it, else the default (``""``: host routing off)."""
    if config is not None:
        suffix: str = _settings(config).host_routing.suffix
        return suffix
    record = state.read_record(state_dir)
    if record is not None and record.host_suffix is not None:
        return record.host_suffix
    return DEFAULT_HOST_SUFFIX


def choose_routing(requested: str | None, suffix: str) -> str:
    """The routing of the cluster contexts: ``requested``, else
    :data:`DEFAULT_ROUTING` (path when host routing is off: ``suffix`` empty);
    host routing on a gateway whose host routing is off is an error."""
    if requested is None:
        return DEFAULT_ROUTING if suffix else PATH_ROUTING
    if requested == HOST_ROUTING and not suffix:
        raise CommandError(
            "--routing host: the gateway's host routing is off (hostRouting.suffix is "
            "empty); use --routing path"
        )
    return requested


def policy_reachable(policy_file: str | None) -> Reachable:
    """Who may reach which cluster under the policy file (everyone without one)."""
    if policy_file is None:
        return everyone
    try:
        policy = load_policy(policy_file)
    except PolicyError as exc:
        raise CommandError("; ".join(exc.problems)) from None
    return policy.reaches


def token_identity(token_file: str | None, token: str) -> Identity:
    """The identity of ``token`` in the token file (never quoting the token)."""
    if token_file is None:
        raise CommandError(
            "--token needs the gateway's token file (authentication.tokenFile): give "
            "--config, or start the gateway with it once"
        )
    try:
        identity = load_token_file(token_file).authenticator.identify(token)
    except TokenFileError as exc:
        raise CommandError("; ".join(exc.problems)) from None
    if identity is None:
        raise CommandError(f"the token is not in the token file {token_file}")
    return identity


def _load_clusters(directory: Path | None, err: TextIO) -> list[Cluster]:
    if directory is None:
        print(
            "karpor kubeconfig: warning: no clusters directory known (give --clusters-dir, "
            "or start the gateway with this --state-dir once): only the 'karpor' context "
            "is written",
            file=err,
        )
        return []
    if not directory.is_dir():
        raise CommandError(f"{directory}: not a directory")
    result = load_directory(str(directory))
    for problem in result.problems:
        print(f"karpor kubeconfig: warning: {problem}", file=err)
    return list(result.clusters)


def _check_server_covered(
    state_dir: Path, server: str, err: TextIO, wildcard: str | None = None
) -> None:
    """Warn when the serving certificate does not name the host of
    ``server`` (or, for host routing, does not cover ``wildcard``)."""
    cert_path = state_dir / state.SERVING_CERT_FILE
    host = urlsplit(server).hostname
    if host is None or not cert_path.exists():
        return
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return
    covered = state.certificate_hosts(cert)
    if wildcard is not None and wildcard not in covered:
        print(
            f"karpor kubeconfig: warning: the gateway's serving certificate does not cover "
            f"{wildcard!r}: host-routed contexts will not verify it; start the gateway with "
            "this host routing suffix so it is issued again",
            file=err,
        )
    if state.serving_hosts(host)[0] not in covered:
        print(
            f"karpor kubeconfig: warning: the gateway's serving certificate does not cover "
            f"{host!r} (it covers {', '.join(covered)}); start the gateway with --host {host} "
            f"so it is issued again",
            file=err,
        )


def generate(
    state_dir: Path,
    user: str,
    groups: list[str],
    server: str | None,
    clusters_dir: Path | None,
    ttl: datetime.timedelta,
    err: TextIO,
    reachable: Reachable = everyone,
    token: str | None = None,
    exec_plugin: dict[str, Any] | None = None,
    *,
    routing: str = PATH_ROUTING,
    suffix: str = DEFAULT_HOST_SUFFIX,
    sets: Iterable[tuple[str, str]] = (),
) -> tuple[bytes, list[str], datetime.datetime | None]:
    """The kubeconfig for ``user`` (with ``token``: a token user, with
    ``exec_plugin``: a user signing in with it; no certificate), cluster
    contexts by ``routing`` (``suffix``: the gateway's host-routing
    suffix), the fan-out contexts (``all`` and ``sets``: ``(name,
    selector)``) when the user reaches a cluster; also the names of the
    contexts but ``karpor`` and the certificate's expiry."""
    if not user:
        raise CommandError("--user must not be empty")
    if is_reserved(Identity(user, tuple(groups))):
        raise CommandError(
            f"{user}: the user name prefix system:karpor:agent: and the group "
            "system:karpor:agents are reserved for agents, which reach no cluster as users "
            "(an agent's credentials: karpor agent-credentials --cluster NAME)"
        )
    if not state.has_ca(state_dir):
        raise CommandError(
            f"{state_dir} holds no gateway CA: start the gateway once with --state-dir "
            f"{state_dir} (or pass the state dir it uses)"
        )
    record = state.read_record(state_dir) or state.GatewayRecord()
    server = server or record.server
    if not server:
        raise CommandError("--server https://HOST:PORT is required (the gateway recorded none)")
    if clusters_dir is None and record.clusters_dir:
        clusters_dir = Path(record.clusters_dir)
    ca = CertificateAuthority.load(state_dir)
    identity = Identity(user, tuple(groups))
    names = cluster_names(_load_clusters(clusters_dir, err), identity, reachable)
    fanouts = fanout_contexts(names, sets, err)
    expiry: datetime.datetime | None = None
    try:
        if exec_plugin is not None:
            config = build_kubeconfig(
                server,
                ca.cert_pem,
                user,
                None,
                None,
                names,
                exec_plugin=exec_plugin,
                routing=routing,
                host_suffix=suffix,
                fanouts=fanouts,
            )
        elif token is not None:
            config = build_kubeconfig(
                server,
                ca.cert_pem,
                user,
                None,
                None,
                names,
                token=token,
                routing=routing,
                host_suffix=suffix,
                fanouts=fanouts,
            )
        else:
            issued = ca.issue_client(user, groups, ttl)
            config = build_kubeconfig(
                server,
                ca.cert_pem,
                user,
                issued.cert_pem,
                issued.key_pem,
                names,
                routing=routing,
                host_suffix=suffix,
                fanouts=fanouts,
            )
            expiry = datetime.datetime.now(datetime.UTC) + ttl
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    wildcard = f"*.{suffix}" if routing == HOST_ROUTING else None
    _check_server_covered(state_dir, server, err, wildcard)
    return dump_kubeconfig(config), [*names, *(name for name, _ in fanouts)], expiry


def fanout_contexts(
    names: list[str], sets: Iterable[tuple[str, str]], err: TextIO
) -> list[tuple[str, str]]:
    """The fan-out contexts for a user reaching the clusters ``names``:
    ``all`` (unless a cluster has that name: a warning) and ``sets``; none
    when the user reaches no cluster."""
    wanted = list(sets)
    if not names:
        if wanted:
            print(
                "karpor kubeconfig: warning: the user reaches no cluster: no --set context "
                "is written",
                file=err,
            )
        return []
    for name, _ in wanted:
        if name in names:
            raise CommandError(f"--set {name}: a cluster has that name (its context)")
    if FANOUT_CONTEXT in names:
        print(
            f"karpor kubeconfig: warning: a cluster is named {FANOUT_CONTEXT!r}: the context "
            f"{FANOUT_CONTEXT!r} is that cluster's, not every cluster's (use --set)",
            file=err,
        )
        return wanted
    return [(FANOUT_CONTEXT, ""), *wanted]


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``karpor kubeconfig``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    token: str | None = getattr(args, "token", None)
    issuer: str | None = getattr(args, "oidc_issuer", None)
    user: str = args.user or ""
    groups: list[str] = list(args.groups)
    exec_plugin: dict[str, Any] | None = None
    try:
        ttl = datetime.timedelta(seconds=parse_duration(args.ttl))
        token_file, policy_file = access_files(args.state_dir, getattr(args, "config", None))
        reachable = policy_reachable(policy_file)
        if sum(x is not None for x in (args.user, token, issuer)) == 0:
            raise CommandError("give --user, --token or --oidc-issuer")
        if token is not None and (args.user is not None or issuer is not None):
            raise CommandError("--token goes alone: not with --user or --oidc-issuer")
        if issuer is not None:
            exec_plugin = oidc_exec(args)
            user = user or OIDC_USER
            if not groups:
                reachable = everyone  # the provider says who: every context
        elif getattr(args, "oidc_client_id", None) is not None:
            raise CommandError("--oidc-client-id goes with --oidc-issuer")
        if token is not None:
            if groups:
                raise CommandError(
                    "--group goes with --user; a token user's groups are in the token file"
                )
            identity = token_identity(token_file, token)
            user, groups = identity.user, list(identity.groups)
        sets = parse_sets(getattr(args, "sets", None) or [])
        suffix = host_suffix(args.state_dir, getattr(args, "config", None))
        routing = choose_routing(getattr(args, "routing", None), suffix)
        data, names, expiry = generate(
            args.state_dir,
            user,
            groups,
            args.server,
            args.clusters_dir,
            ttl,
            err,
            reachable,
            token,
            exec_plugin,
            routing=routing,
            suffix=suffix,
            sets=sets,
        )
    except (CommandError, ValueError, OSError) as exc:
        print(f"karpor kubeconfig: error: {exc}", file=err)
        return 1
    if args.output in ("-", ""):
        out.write(data.decode())
        out.flush()
        where = "standard output"
    else:
        try:
            write_private(Path(args.output), data)
        except OSError as exc:
            print(f"karpor kubeconfig: error: {args.output}: {exc.strerror or exc}", file=err)
            return 1
        where = args.output
    contexts = [*names, "karpor"]
    shown = f" (groups: {', '.join(groups)})" if groups else ""
    if exec_plugin is not None:
        credential = f"user {user} signs in at {issuer} with 'karpor login' (no certificate issued)"
    elif expiry is not None:
        credential = f"certificate for {user}{shown} valid until {expiry:%Y-%m-%d %H:%M} UTC"
    else:
        credential = f"token of {user}{shown} (no certificate issued)"
    routed = f"by host (*.{suffix})" if routing == HOST_ROUTING else "by path"
    print(
        f"karpor kubeconfig: wrote {where}: contexts {', '.join(contexts)} "
        f"(current: {contexts[0]}; clusters {routed}); {credential}",
        file=err,
    )
    if routing == HOST_ROUTING and names:
        print(
            "karpor kubeconfig: note: the fan-out contexts reach the gateway by path "
            "(a host name cannot name many clusters)",
            file=err,
        )
        print(
            "karpor kubeconfig: note: kubectl caches discovery per server URL, which "
            "host-routed contexts share: set KUBECACHEDIR per context (or use wildcard "
            "DNS) when the clusters serve different APIs",
            file=err,
        )
    return 0
