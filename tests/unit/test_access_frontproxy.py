"""Front-proxy trust from the host cluster (``requestHeader.fromCluster``):
the ConfigMap, the settings, the fetch, the refresh, and Access using it."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import crypto
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent

from karpor.auth import frontproxy, frontproxysource
from karpor.auth.access import Access, AccessError
from karpor.auth.ca import CertificateAuthority
from karpor.auth.frontproxy import (
    FrontProxyError,
    FrontProxyTrust,
    in_cluster_server,
    interpret_response,
    parse_configmap,
    refreshed,
)
from karpor.auth.frontproxysource import FrontProxyRefresh, check, fetch, start_refresh
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.auth.sections import (
    AuthenticationSettings,
    AuthorizationSettings,
    FromClusterSettings,
    RequestHeaderSettings,
    parse_authentication,
)
from karpor.config.validation import parse_value
from karpor.kube.status import ApiError

FRONT_CA = CertificateAuthority.create("front-proxy-ca")
OTHER_CA = CertificateAuthority.create("front-proxy-ca-2")


def configmap(ca_pem: bytes = FRONT_CA.cert_pem, **data: Any) -> dict[str, Any]:
    """The ConfigMap kube-apiserver publishes (kubeadm's values by default)."""
    values = {
        "client-ca-file": "unused by karpor",
        "requestheader-client-ca-file": ca_pem.decode(),
        "requestheader-allowed-names": '["front-proxy-client"]',
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-group-headers": '["X-Remote-Group"]',
        "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    }
    values.update(data)
    return {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": {k: v for k, v in values.items() if v is not None},
    }


def trust_of(**data: Any) -> FrontProxyTrust:
    return parse_configmap(configmap(**data))


def peer(cert_pem: bytes) -> crypto.X509:
    return crypto.X509.from_cryptography(x509.load_pem_x509_certificate(cert_pem))


# --- the ConfigMap -------------------------------------------------------------------


def test_kubeadm_configmap() -> None:
    trust = trust_of()
    assert trust.ca_pem == FRONT_CA.cert_pem
    assert trust.config == RequestHeaderConfig(
        allowed_names=("front-proxy-client",),
        username_headers=("X-Remote-User",),
        group_headers=("X-Remote-Group",),
        extra_headers_prefix=("X-Remote-Extra-",),
        uid_headers=(),
    )
    assert trust.describe() == (
        "CA CN=front-proxy-ca; allowed names front-proxy-client; user headers X-Remote-User; "
        "group headers X-Remote-Group"
    )


def test_a_ca_bundle_uid_headers_and_empty_lists() -> None:
    bundle = FRONT_CA.cert_pem + OTHER_CA.cert_pem
    trust = trust_of(
        ca_pem=bundle,
        **{
            "requestheader-allowed-names": "[]",
            "requestheader-group-headers": "",
            "requestheader-uid-headers": '["X-Remote-Uid"]',
        },
    )
    assert trust.ca_pem == bundle
    assert trust.config.allowed_names == ()
    assert trust.config.group_headers == ()
    assert trust.config.uid_headers == ("X-Remote-Uid",)
    assert "allowed names any" in trust.describe()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"requestheader-client-ca-file": None},
            "requestheader-client-ca-file: missing (the host apiserver runs without "
            "--requestheader-client-ca-file: it cannot proxy to aggregated API servers)",
        ),
        (
            {"requestheader-client-ca-file": "junk"},
            "requestheader-client-ca-file: no PEM certificate",
        ),
        (
            {"requestheader-allowed-names": "front-proxy-client"},
            "requestheader-allowed-names: not a JSON list of strings",
        ),
        (
            {"requestheader-group-headers": "[1]"},
            "requestheader-group-headers: not a JSON list of strings",
        ),
        (
            {"requestheader-username-headers": "[]"},
            "requestheader-username-headers: names no header",
        ),
        (
            {"requestheader-username-headers": None},
            "requestheader-username-headers: names no header",
        ),
        (
            {"requestheader-extra-headers-prefix": '["X Remote"]'},
            "requestheader-extra-headers-prefix: not a header name: 'X Remote'",
        ),
    ],
)
def test_bad_configmaps_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(FrontProxyError) as error:
        parse_configmap(configmap(**data))
    assert str(error.value) == message


def test_not_a_configmap() -> None:
    with pytest.raises(FrontProxyError, match="not a ConfigMap"):
        parse_configmap({"kind": "Status"})
    with pytest.raises(FrontProxyError, match="not a ConfigMap"):
        parse_configmap([])


@given(st.dictionaries(st.text(max_size=40), st.text(max_size=60), max_size=6))
def test_any_data_parses_or_names_a_key(data: dict[str, str]) -> None:
    doc = {"kind": "ConfigMap", "data": {**configmap()["data"], **data}}
    try:
        trust = parse_configmap(doc)
    except FrontProxyError as exc:
        assert str(exc).startswith("requestheader-")
    else:
        assert trust.config.username_headers


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, b"{}", "HTTP 401: the service account token was refused"),
        (
            403,
            b"{}",
            "HTTP 403: the service account may not read it: bind it to the Role "
            "extension-apiserver-authentication-reader in kube-system (etc/kubernetes/rbac.yaml)",
        ),
        (404, b"", "HTTP 404: there is no such ConfigMap (is this the host cluster's apiserver?)"),
        (500, b'{"kind":"Status","message":"etcd is down"}', "HTTP 500: etcd is down"),
        (502, b"<html>", "HTTP 502: unexpected answer"),
        (200, b"<html>", "the answer is not JSON"),
    ],
)
def test_answers_that_are_not_the_configmap(status: int, body: bytes, message: str) -> None:
    with pytest.raises(FrontProxyError) as error:
        interpret_response(status, body)
    assert str(error.value) == message


def test_in_cluster_server() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env) == "https://10.96.0.1:443"
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert in_cluster_server(env) == "https://[fd00::1]:6443"
    with pytest.raises(FrontProxyError, match=r"KUBERNETES_SERVICE_HOST and .* not set"):
        in_cluster_server({"KUBERNETES_SERVICE_PORT": "443"})


def test_a_refresh_follows_the_ca_and_names_but_keeps_the_headers() -> None:
    first = trust_of()
    assert refreshed(first, trust_of()) == (first, [])
    rotated = trust_of(
        ca_pem=FRONT_CA.cert_pem + OTHER_CA.cert_pem,
        **{"requestheader-allowed-names": '["front-proxy-client", "aggregator"]'},
    )
    applied, notes = refreshed(first, rotated)
    assert applied == rotated
    [(level, message)] = notes
    assert level == "info"
    assert message.startswith("front-proxy settings from kube-system/")
    assert "allowed names front-proxy-client, aggregator" in message
    renamed = trust_of(**{"requestheader-username-headers": '["X-User"]'})
    applied, notes = refreshed(first, renamed)
    assert applied == first
    assert notes == [
        (
            "warn",
            "the header names in kube-system/extension-apiserver-authentication changed "
            "(username_headers): restart karpor to use them; the names read at start stay in use",
        )
    ]


# --- the settings --------------------------------------------------------------------


def authentication(value: object, base_dir: str) -> AuthenticationSettings:
    parsed: AuthenticationSettings = parse_value(
        parse_authentication, value, "authentication", base_dir
    )
    return parsed


def test_from_cluster_settings() -> None:
    parsed = authentication({"requestHeader": {"fromCluster": True}}, "/etc/karpor")
    assert parsed.request_header == RequestHeaderSettings(from_cluster=FromClusterSettings())
    assert FromClusterSettings().token_file == frontproxy.SERVICE_ACCOUNT_TOKEN_FILE
    assert FromClusterSettings().ca_file == frontproxy.SERVICE_ACCOUNT_CA_FILE
    overrides = {
        "server": "https://127.0.0.1:6443/",
        "tokenFile": "sa/token",
        "caFile": "sa/ca.crt",
        "refreshInterval": 0.5,
    }
    parsed = authentication({"requestHeader": {"fromCluster": overrides}}, "/etc/karpor")
    assert parsed.request_header is not None
    assert parsed.request_header.from_cluster == FromClusterSettings(
        "https://127.0.0.1:6443", "/etc/karpor/sa/token", "/etc/karpor/sa/ca.crt", 0.5
    )
    off = authentication({"requestHeader": {"fromCluster": False, "clientCAFile": "ca.crt"}}, "/e")
    assert off.request_header is not None
    assert off.request_header.from_cluster is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"fromCluster": True, "clientCAFile": "ca.crt", "allowedNames": ["x"]},
            "authentication.requestHeader.clientCAFile: not with fromCluster (the host "
            "cluster's ConfigMap kube-system/extension-apiserver-authentication sets it)\n"
            "authentication.requestHeader.allowedNames: not with fromCluster (the host "
            "cluster's ConfigMap kube-system/extension-apiserver-authentication sets it)",
        ),
        (
            {"fromCluster": "yes"},
            "authentication.requestHeader.fromCluster: must be true, false or a mapping, "
            "not a string",
        ),
        (
            {"fromCluster": {"server": "http://x"}},
            "authentication.requestHeader.fromCluster.server: must be an https:// URL, "
            "not a string",
        ),
        (
            {"fromCluster": {"refreshInterval": 0}},
            "authentication.requestHeader.fromCluster.refreshInterval: must be a positive "
            "number of seconds, not a number",
        ),
        (
            {"fromCluster": {"token": "x"}},
            "authentication.requestHeader.fromCluster.token: unknown key (did you mean tokenFile?)",
        ),
    ],
)
def test_bad_from_cluster_settings(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as error:
        authentication({"requestHeader": section}, "/e")
    assert str(error.value) == message


# --- Access with the trust ---------------------------------------------------------


def from_cluster_access() -> Access:
    authentication = AuthenticationSettings(
        request_header=RequestHeaderSettings(from_cluster=FromClusterSettings())
    )
    return Access.from_settings(
        authentication,
        AuthorizationSettings(),
        CertificateAuthority.create("gateway").cert_pem,
        Path("/nonexistent-state"),
    )


def test_access_trusts_the_front_proxy_once_set() -> None:
    access = from_cluster_access()
    client = FRONT_CA.issue_client("front-proxy-client")
    headers = [(b"X-User", b"alice"), (b"X-Remote-User", b"bob")]
    before = access.peer(peer(client.cert_pem))
    assert before.front_proxy is None
    with pytest.raises(ApiError):
        access.authenticate(before, headers)
    trust = trust_of(**{"requestheader-username-headers": '["X-User"]'})
    access.set_front_proxy([trust.ca_pem], trust.config)
    after = access.peer(peer(client.cert_pem))
    assert after.front_proxy == "front-proxy-client"
    assert access.authenticate(after, headers).user == "alice"
    assert b"x-user" in access.drop_names
    assert b"x-remote-user" not in access.drop_names
    # a CN not allowed, or a certificate of another CA: 401
    other_cn = access.peer(peer(FRONT_CA.issue_client("someone").cert_pem))
    with pytest.raises(ApiError) as error:
        access.authenticate(other_cn, headers)
    assert error.value.code == 401
    foreign = access.peer(peer(OTHER_CA.issue_client("front-proxy-client").cert_pem))
    assert foreign.rejected
    with pytest.raises(ApiError):
        access.authenticate(foreign, headers)


# --- the refresh ----------------------------------------------------------------------


class Source:
    """A fetch whose answers the test sets: a trust or an error."""

    def __init__(self, answer: FrontProxyTrust | FrontProxyError) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, settings: FromClusterSettings) -> FrontProxyTrust:
        self.calls += 1
        if isinstance(self.answer, FrontProxyError):
            raise self.answer
        return self.answer


def synchronous(fetcher: Any, settings: FromClusterSettings) -> defer.Deferred[FrontProxyTrust]:
    return defer.maybeDeferred(fetcher, settings)


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the refresh logs, as ``level: text`` lines."""
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        lines.append(f"{event['log_level'].name}: {formatEvent(event)}")

    logger = Logger(namespace="karpor.frontproxy", observer=cast(ILogObserver, observe))
    monkeypatch.setattr(frontproxysource, "log", logger)
    return lines


def test_refresh_applies_changes_and_keeps_the_last_good(logged: list[str]) -> None:
    clock = Clock()
    access = from_cluster_access()
    source = Source(trust_of())
    refresh = FrontProxyRefresh(
        access, FromClusterSettings(refresh_interval=5), clock, source, synchronous
    )
    refresh.load()
    refresh.start()
    assert logged == [
        "info: front-proxy settings from kube-system/extension-apiserver-authentication: "
        "CA CN=front-proxy-ca; allowed names front-proxy-client; user headers X-Remote-User; "
        "group headers X-Remote-Group"
    ]
    aggregator = peer(FRONT_CA.issue_client("aggregator").cert_pem)
    headers = [(b"X-Remote-User", b"alice")]
    with pytest.raises(ApiError):
        access.authenticate(access.peer(aggregator), headers)
    source.answer = trust_of(**{"requestheader-allowed-names": '["aggregator"]'})
    clock.advance(5)
    assert source.calls == 2
    assert access.authenticate(access.peer(aggregator), headers).user == "alice"
    assert "allowed names aggregator" in logged[-1]
    source.answer = FrontProxyError("cannot read the ConfigMap kube-system/x: HTTP 403: no")
    clock.advance(5)
    assert logged[-1] == (
        "warn: cannot read the ConfigMap kube-system/x: HTTP 403: no "
        "(keeping the last good front-proxy settings)"
    )
    assert access.authenticate(access.peer(aggregator), headers).user == "alice"
    refresh.stop()
    clock.advance(50)
    assert source.calls == 3


def test_a_first_read_that_fails_stops_the_start() -> None:
    access = from_cluster_access()
    source = Source(FrontProxyError("cannot read the ConfigMap kube-system/x: HTTP 401: no"))
    refresh = FrontProxyRefresh(access, FromClusterSettings(), Clock(), source, synchronous)
    with pytest.raises(AccessError) as error:
        refresh.load()
    assert str(error.value) == (
        "requestHeader.fromCluster: cannot read the ConfigMap kube-system/x: HTTP 401: no"
    )
    with pytest.raises(AccessError):
        check(
            AuthenticationSettings(
                request_header=RequestHeaderSettings(from_cluster=FromClusterSettings())
            ),
            source,
        )


def test_nothing_to_do_without_from_cluster() -> None:
    plain = AuthenticationSettings()
    assert start_refresh(plain, from_cluster_access(), Clock()) is None
    check(plain, Source(FrontProxyError("never called")))


# --- the fetch ------------------------------------------------------------------------


class ApiServer:
    """A one-path HTTPS server standing in for kube-apiserver."""

    def __init__(self, tmp: Path, status: int, body: bytes) -> None:
        ca = CertificateAuthority.create("cluster-ca")
        serving = ca.issue_server("kube-apiserver", ["127.0.0.1"])
        serving.write(tmp / "apiserver.crt", tmp / "apiserver.key")
        (tmp / "ca.crt").write_bytes(ca.cert_pem)
        self.ca_file = tmp / "ca.crt"
        self.seen: list[tuple[str, str | None]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "apiserver.crt", tmp / "apiserver.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def service_account(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("sa-token-0123456789\n")
    return tmp_path


def test_fetch_reads_the_configmap_with_the_service_account(service_account: Path) -> None:
    server = ApiServer(service_account, 200, json.dumps(configmap()).encode())
    try:
        settings = FromClusterSettings(
            token_file=str(service_account / "token"), ca_file=str(server.ca_file)
        )
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}
        assert fetch(settings, env) == trust_of()
    finally:
        server.close()
    assert server.seen == [
        (
            "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
            "Bearer sa-token-0123456789",
        )
    ]


def test_fetch_errors_say_what_to_fix_and_never_show_the_token(service_account: Path) -> None:
    server = ApiServer(service_account, 403, b'{"kind":"Status"}')
    url = f"https://127.0.0.1:{server.port}"
    token = str(service_account / "token")
    ca = str(server.ca_file)
    other = service_account / "other-ca.crt"
    other.write_bytes(OTHER_CA.cert_pem)
    messages: list[str] = []

    def failure(settings: FromClusterSettings, env: dict[str, str] | None = None) -> str:
        with pytest.raises(FrontProxyError) as error:
            fetch(settings, env, timeout=5)
        messages.append(str(error.value))
        return messages[-1].removeprefix(
            "cannot read the ConfigMap kube-system/extension-apiserver-authentication: "
        )

    try:
        assert failure(FromClusterSettings(url, token, ca)) == (
            f"{url}: HTTP 403: the service account may not read it: bind it to the Role "
            "extension-apiserver-authentication-reader in kube-system (etc/kubernetes/rbac.yaml)"
        )
        assert failure(FromClusterSettings(url, token, str(other))).startswith(
            f"{url}: TLS: CERTIFICATE_VERIFY_FAILED"
        )
    finally:
        server.close()
    assert failure(FromClusterSettings(url, str(service_account / "missing"), ca)) == (
        f"token file {service_account / 'missing'}: cannot read: No such file or directory"
    )
    assert failure(FromClusterSettings(url, token, token)) == (
        f"CA file {token}: cannot use: no PEM certificate"
    )
    assert failure(FromClusterSettings(None, token, ca), env={}).startswith(
        "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"
    )
    assert failure(FromClusterSettings(url, token, ca)) == f"{url}: Connection refused"
    assert server.seen == [
        (
            "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
            "Bearer sa-token-0123456789",
        )
    ]
    assert not any("sa-token" in m for m in messages)
