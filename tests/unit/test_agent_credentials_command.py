"""``karpor agent-credentials``: the command, against a state directory in a temp dir;
the agent's certificate authenticates as the agent, and ``karpor revoke`` revokes it."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

from karpor.agent.credentials import load_agent_credentials
from karpor.app import state
from karpor.auth.access import Access
from karpor.auth.agentidentity import tunnel_cluster
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.ca import CertificateAuthority
from karpor.auth.identity import Identity
from karpor.auth.revocation import REVOKED_FILE, ReloadingFile, RevocationList, load_revocations
from karpor.cli import build_parser
from karpor.kube.status import ApiError


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    state.GatewayState.prepare(directory, "127.0.0.1")
    return directory


def run(command: str, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args([command, *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.handler(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def issue(state_dir: Path, target: Path, *extra: str) -> tuple[int, str]:
    code, out, err = run(
        "agent-credentials", "--state-dir", str(state_dir), "--cluster", "edge-1",
        "--server", "https://127.0.0.1:8443", "-o", str(target), *extra,
    )  # fmt: skip
    assert out == ""
    return code, err


def authenticate(state_dir: Path, cert_pem: bytes) -> Identity:
    """The identity the gateway of ``state_dir`` sees for ``cert_pem`` (revocations applied)."""
    ca = CertificateAuthority.load(state_dir)
    revoked = str(state_dir / REVOKED_FILE)
    access = Access(
        certificates=CertificateAuthenticator([ca.cert_pem]),
        revocations=ReloadingFile(revoked, load_revocations, RevocationList()),
    )
    access.poll(0.0)
    peer = access.peer(crypto.X509.from_cryptography(x509.load_pem_x509_certificate(cert_pem)))
    return access.authenticate(peer, [])


def test_writes_the_agents_credentials(state_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "edge-1.agent"
    code, err = issue(state_dir, target, "--ttl", "2d")
    assert code == 0, err
    assert os.stat(target).st_mode & 0o777 == 0o600
    credentials = load_agent_credentials(str(target))
    assert (credentials.cluster, credentials.server) == ("edge-1", "https://127.0.0.1:8443")
    assert credentials.tls_server_name is None
    ca = CertificateAuthority.load(state_dir)
    assert credentials.ca_pem == ca.cert_pem
    cert = x509.load_pem_x509_certificate(credentials.certificate_pem)
    cert.verify_directly_issued_by(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:karpor:agent:edge-1"
    )
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:karpor:agents"
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    identity = authenticate(state_dir, credentials.certificate_pem)
    assert tunnel_cluster(identity) == "edge-1"
    # the summary names the agent and the serial to revoke; no key
    assert f"serial {cert.serial_number:x}" in err
    assert "system:karpor:agent:edge-1" in err
    assert "PRIVATE KEY" not in err


@pytest.mark.parametrize("how", ["serial", "user"])
def test_karpor_revoke_revokes_it(state_dir: Path, tmp_path: Path, how: str) -> None:
    target = tmp_path / "edge-1.agent"
    code, err = issue(state_dir, target)
    assert code == 0, err
    cert_pem = load_agent_credentials(str(target)).certificate_pem
    authenticate(state_dir, cert_pem)  # valid until revoked
    match = re.search(r"\(revoke: karpor revoke (.*)\)", err)
    assert match, err
    argv = match.group(1).split()
    if how == "user":
        argv = [*argv[:2], "--user", "system:karpor:agent:edge-1"]
    code, _, revoke_err = run("revoke", *argv)
    assert code == 0, revoke_err
    with pytest.raises(ApiError) as refused:
        authenticate(state_dir, cert_pem)
    assert refused.value.code == 401


def test_tls_server_name_and_the_coverage_warning(state_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "edge-1.agent"
    code, err = issue(state_dir, target, "--tls-server-name", "localhost")
    assert code == 0, err
    assert load_agent_credentials(str(target)).tls_server_name == "localhost"
    assert "warning" not in err
    code, err = issue(state_dir, target, "--tls-server-name", "gateway.example")
    assert code == 0, err
    assert "warning: the gateway's serving certificate does not cover 'gateway.example'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cluster", "Edge_1"], "is not a cluster name"),
        (["--server", "http://127.0.0.1:8443"], "--server: must be an https:// URL"),
        (["--server", "https://user:s3cret@127.0.0.1"], "must not contain user information"),
        (["--tls-server-name", "bad name"], "--tls-server-name: invalid server name"),
        (["--ttl", "forever"], "forever"),
    ],
)
def test_refuses_bad_arguments(
    state_dir: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    target = tmp_path / "edge-1.agent"
    code, err = issue(state_dir, target, *argv)
    assert code == 1
    assert message in err
    assert "s3cret" not in err
    assert not target.exists()


def test_needs_the_gateway_ca(tmp_path: Path) -> None:
    code, err = issue(tmp_path, tmp_path / "x.agent")
    assert code == 1 and "holds no gateway CA" in err


def test_karpor_kubeconfig_issues_no_agent_identity(state_dir: Path, tmp_path: Path) -> None:
    for who in (
        ["--user", "system:karpor:agent:edge-1"],
        ["--user", "mallory", "--group", "system:karpor:agents"],
    ):
        code, _, err = run(
            "kubeconfig", "--state-dir", str(state_dir), "--server", "https://127.0.0.1:8443",
            "-o", str(tmp_path / "k"), *who,
        )  # fmt: skip
        assert code == 1
        assert "reserved for agents" in err
        assert not (tmp_path / "k").exists()
