"""``karpor certificates``: the content of a read-only state directory for replicas."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from cryptography import x509

from karpor.app import state
from karpor.cli import build_parser, certificates


def run(*argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["certificates", *argv])
    out, err = io.StringIO(), io.StringIO()
    status = args.handler(args, out, err)
    return status, out.getvalue(), err.getvalue()


def covered(directory: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate((directory / "serving.crt").read_bytes())
    return set(state.certificate_hosts(cert))


_SECRET_FILES = ("ca.crt", "serving.crt", "serving.key")


def test_the_secret_command_adds_the_revocation_list_once_there_is_one(tmp_path: Path) -> None:
    run(str(tmp_path))
    assert "revoked.json" not in certificates.secret_command(tmp_path)
    (tmp_path / "revoked.json").write_text("{}")
    command = certificates.secret_command(tmp_path)
    assert command.startswith("kubectl -n karpor create secret generic karpor-state ")
    assert command.endswith(f"--from-file={tmp_path / 'revoked.json'}")
    assert "ca.key" not in command


def test_writes_the_four_files_and_prints_the_ca_bundle(tmp_path: Path) -> None:
    directory = tmp_path / "karpor-state"
    status, out, err = run(str(directory))
    assert status == 0
    assert sorted(p.name for p in directory.iterdir()) == [
        "ca.crt",
        "ca.key",
        "serving.crt",
        "serving.key",
    ]
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert base64.b64decode(out.strip()) == (directory / "ca.crt").read_bytes()
    assert set(certificates.DEFAULT_NAMES) | set(state.LOOPBACK) <= covered(directory)
    assert "*.clusters.karpor" in covered(directory)  # host routing's default suffix
    # the replicas' Secret: every file but the CA key
    files = [w for w in err.split() if w.startswith("--from-file=")]
    assert files == [f"--from-file={directory / name}" for name in _SECRET_FILES]
    assert "PRIVATE" not in out + err
    # what replicas mount read-only
    prepared = state.GatewayState.prepare(
        directory,
        "0.0.0.0",
        names=certificates.DEFAULT_NAMES,
        read_only=True,
        wildcards=["*.clusters.karpor"],
    )
    assert prepared.warnings == ()
    assert base64.b64encode(prepared.ca.cert_pem).decode() == out.strip()


def test_running_again_keeps_the_ca_and_adds_names(tmp_path: Path) -> None:
    _, first, _ = run(str(tmp_path), "--name", "karpor.karpor.svc")
    serving = (tmp_path / "serving.crt").read_bytes()
    status, again, err = run(str(tmp_path), "--name", "karpor.karpor.svc")
    assert (status, again) == (0, first)
    assert "kept" in err
    assert (tmp_path / "serving.crt").read_bytes() == serving
    status, more, err = run(str(tmp_path), "--name", "gw.example.com", "--name", "10.0.0.9")
    assert (status, more) == (0, first)
    assert "issued (it does not cover" in err
    assert {"karpor.karpor.svc", "gw.example.com", "10.0.0.9"} <= covered(tmp_path)


def test_a_bad_name_is_a_usage_error(tmp_path: Path) -> None:
    status, out, err = run(str(tmp_path / "s"), "--name", "not a name")
    assert (status, out) == (2, "")
    assert err == "karpor certificates: --name: not a DNS name or IP address: 'not a name'\n"
    assert not (tmp_path / "s").exists()
