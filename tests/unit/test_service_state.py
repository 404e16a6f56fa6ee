"""The state directory: the CA, the serving certificate and its renewal, the record."""

import datetime
import os

import pytest
from cryptography import x509

from karpor.app import state
from karpor.auth.ca import CertificateAuthority
from karpor.cli import certificates


def sans(pem: bytes) -> list[str]:
    return state.certificate_hosts(x509.load_pem_x509_certificate(pem))


def test_first_start_creates_ca_and_serving_certificate(tmp_path):
    directory = tmp_path / "state"
    prepared = state.GatewayState.prepare(directory, "127.0.0.1")
    assert os.stat(directory).st_mode & 0o777 == 0o700
    for name in ("ca.key", "serving.key"):
        assert os.stat(directory / name).st_mode & 0o077 == 0
    assert prepared.serving.issued_because == "there was none"
    assert set(sans(prepared.serving.cert_pem)) >= {"127.0.0.1", "localhost", "::1"}
    cert = x509.load_pem_x509_certificate(prepared.serving.cert_pem)
    cert.verify_directly_issued_by(prepared.ca.cert)
    assert "PRIVATE" not in repr(prepared.serving)


def test_second_start_keeps_both(tmp_path):
    first = state.GatewayState.prepare(tmp_path, "127.0.0.1")
    second = state.GatewayState.prepare(tmp_path, "localhost")
    assert second.ca.cert_pem == first.ca.cert_pem
    assert second.serving.cert_pem == first.serving.cert_pem
    assert second.serving.issued_because is None


def test_a_new_host_reissues_keeping_the_old_names(tmp_path):
    state.GatewayState.prepare(tmp_path, "gw.example")
    again = state.GatewayState.prepare(tmp_path, "10.1.2.3")
    assert again.serving.issued_because == "it does not cover 10.1.2.3"
    assert {"gw.example", "10.1.2.3", "localhost", "127.0.0.1", "::1"} <= set(
        sans(again.serving.cert_pem)
    )


def test_near_expiry_reissues(tmp_path):
    state.GatewayState.prepare(tmp_path, "127.0.0.1")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=800)
    again = state.GatewayState.prepare(tmp_path, "127.0.0.1", now=later)
    assert again.serving.issued_because is not None
    assert again.serving.issued_because.startswith("it expires on")


def test_a_certificate_from_another_ca_is_replaced(tmp_path):
    ca = CertificateAuthority.load_or_create(tmp_path, state.CA_COMMON_NAME)
    other = CertificateAuthority.create("other").issue_server("karpor", ["127.0.0.1"])
    other.write(tmp_path / state.SERVING_CERT_FILE, tmp_path / state.SERVING_KEY_FILE)
    again = state.GatewayState.prepare(tmp_path, "127.0.0.1")
    assert again.serving.issued_because == "it was not issued by the gateway CA"
    x509.load_pem_x509_certificate(again.serving.cert_pem).verify_directly_issued_by(ca.cert)


def test_wildcard_host_covers_the_machine_name():
    hosts = state.serving_hosts("0.0.0.0")
    assert "0.0.0.0" not in hosts
    assert {"localhost", "127.0.0.1", "::1"} <= set(hosts)
    assert len(hosts) > 3


def test_renewal_reason_for_garbage():
    ca = CertificateAuthority.create("ca")
    assert state.renewal_reason(b"nonsense", ca, ["localhost"]) == "it does not parse"


def test_record_round_trip(tmp_path):
    assert state.read_record(tmp_path) is None
    record = state.GatewayRecord("/srv/clusters", "https://127.0.0.1:8443")
    state.write_record(tmp_path, record)
    assert state.read_record(tmp_path) == record
    (tmp_path / state.RECORD_FILE).write_text("[1, 2]")
    assert state.read_record(tmp_path) is None


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8443, "https://127.0.0.1:8443"),
        ("::1", 1, "https://[::1]:1"),
        ("gw.example", 443, "https://gw.example:443"),
    ],
)
def test_default_server(host, port, url):
    assert state.default_server(host, port) == url


# --- serving names and read-only state (replicas) -------------------------------------

SERVICE_NAMES = ("karpor.karpor.svc", "karpor.karpor.svc.cluster.local")


def replica_state(directory):
    """The content ``karpor certificates`` writes, for the Service names."""
    return certificates.write_state(directory, SERVICE_NAMES)


def snapshot(directory):
    """Every file of ``directory`` with its content and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_serving_names_are_covered_and_kept(tmp_path):
    first = state.GatewayState.prepare(tmp_path, "0.0.0.0", names=["GW.example.", "10.9.8.7"])
    assert {"gw.example", "10.9.8.7", "localhost"} <= set(sans(first.serving.cert_pem))
    again = state.GatewayState.prepare(tmp_path, "0.0.0.0", names=["gw.example"])
    assert again.serving.cert_pem == first.serving.cert_pem
    more = state.GatewayState.prepare(tmp_path, "0.0.0.0", names=["other.example"])
    assert more.serving.issued_because == "it does not cover other.example"
    assert {"gw.example", "10.9.8.7", "other.example"} <= set(sans(more.serving.cert_pem))


def test_a_serving_key_not_matching_is_replaced(tmp_path):
    first = state.GatewayState.prepare(tmp_path, "127.0.0.1")
    other = first.ca.issue_server("karpor", ["127.0.0.1"])
    (tmp_path / state.SERVING_KEY_FILE).write_bytes(other.key_pem)
    again = state.GatewayState.prepare(tmp_path, "127.0.0.1")
    assert again.serving.issued_because == "serving.key does not match it"
    assert state.key_matches(
        x509.load_pem_x509_certificate(again.serving.cert_pem), again.serving.key_pem
    )


def test_read_only_state_is_used_as_it_is(tmp_path):
    directory = tmp_path / "state"
    made = replica_state(directory)
    before = snapshot(directory)
    prepared = state.GatewayState.prepare(directory, "0.0.0.0", names=SERVICE_NAMES, read_only=True)
    assert prepared.read_only
    assert prepared.warnings == ()
    assert prepared.serving.cert_pem == made.serving.cert_pem
    assert prepared.ca.cert_pem == made.ca.cert_pem
    prepared.record(state.GatewayRecord("/srv/clusters", "https://karpor.karpor.svc:443"))
    assert snapshot(directory) == before
    assert set(before) == {"ca.crt", "ca.key", "serving.crt", "serving.key"}
    # the same files serve a second replica: one caBundle verifies both
    second = state.GatewayState.prepare(directory, "0.0.0.0", names=SERVICE_NAMES, read_only=True)
    assert second.serving.cert_pem == prepared.serving.cert_pem


def test_a_directory_not_writable_is_read_only(tmp_path, monkeypatch):
    replica_state(tmp_path)
    before = snapshot(tmp_path)
    assert not state.is_read_only(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)
    assert state.is_read_only(tmp_path)
    assert not state.is_read_only(tmp_path / "missing")
    prepared = state.GatewayState.prepare(tmp_path, "0.0.0.0", names=SERVICE_NAMES)
    assert prepared.read_only
    assert snapshot(tmp_path) == before


def test_kubernetes_secret_volume_layout_is_read(tmp_path):
    """A Secret volume: the files are links through ``..data`` to a hidden directory."""
    version = tmp_path / "state" / "..2024_01_01_00_00_00.1"
    replica_state(version)
    directory = version.parent
    (directory / "..data").symlink_to(version.name)
    for name in ("ca.crt", "ca.key", "serving.crt", "serving.key"):
        (directory / name).symlink_to(f"..data/{name}")
    prepared = state.GatewayState.prepare(directory, "0.0.0.0", names=SERVICE_NAMES, read_only=True)
    assert prepared.serving.cert_pem == (version / "serving.crt").read_bytes()


def test_read_only_state_without_the_ca_key_verifies_and_never_issues(tmp_path):
    made = replica_state(tmp_path)
    (tmp_path / "ca.key").unlink()
    prepared = state.GatewayState.prepare(tmp_path, "0.0.0.0", names=SERVICE_NAMES, read_only=True)
    assert prepared.ca.cert_pem == made.ca.cert_pem
    assert not prepared.ca.can_issue and made.ca.can_issue
    with pytest.raises(ValueError, match=r"has no private key here \(ca\.key\)"):
        prepared.ca.issue_client("mallory", ["system:masters"])


@pytest.mark.parametrize("name", ["ca.crt", "serving.crt", "serving.key"])
def test_read_only_state_missing_a_file_names_it(tmp_path, name):
    replica_state(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(state.StateError) as error:
        state.GatewayState.prepare(tmp_path, "0.0.0.0", read_only=True)
    assert str(error.value) == (
        f"{tmp_path / name}: missing from the read-only state directory; "
        "create the state with `karpor certificates DIR --name NAME...`"
    )
    assert not (tmp_path / name).exists()


def test_read_only_state_directory_missing(tmp_path):
    with pytest.raises(state.StateError, match="read-only state directory does not exist"):
        state.GatewayState.prepare(tmp_path / "nope", "0.0.0.0", read_only=True)
    assert not (tmp_path / "nope").exists()


def test_read_only_state_not_covering_a_serving_name(tmp_path):
    replica_state(tmp_path)
    with pytest.raises(state.StateError) as error:
        state.GatewayState.prepare(
            tmp_path, "0.0.0.0", names=[*SERVICE_NAMES, "karpor.example.com"], read_only=True
        )
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'serving.crt'}: does not cover karpor.example.com ")
    assert "karpor certificates DIR --name NAME" in message
    # a specific host must be covered too; the loopback address is
    state.GatewayState.prepare(tmp_path, "127.0.0.1", read_only=True)
    with pytest.raises(state.StateError, match=r"does not cover 10\.1\.1\.1 "):
        state.GatewayState.prepare(tmp_path, "10.1.1.1", read_only=True)


def test_read_only_state_with_a_foreign_or_mismatched_serving_certificate(tmp_path):
    made = replica_state(tmp_path)
    foreign = CertificateAuthority.create("other").issue_server("karpor", SERVICE_NAMES)
    (tmp_path / "serving.crt").write_bytes(foreign.cert_pem)
    with pytest.raises(state.StateError, match=r"serving\.crt: not issued by the CA of ca\.crt"):
        state.GatewayState.prepare(tmp_path, "0.0.0.0", read_only=True)
    (tmp_path / "serving.crt").write_bytes(made.serving.cert_pem)
    (tmp_path / "serving.key").write_bytes(foreign.key_pem)
    mismatch = r"serving\.key: not the private key of serving\.crt"
    with pytest.raises(state.StateError, match=mismatch):
        state.GatewayState.prepare(tmp_path, "0.0.0.0", read_only=True)
    (tmp_path / "serving.crt").write_text("garbage")
    with pytest.raises(state.StateError, match=r"serving\.crt: not a PEM certificate"):
        state.GatewayState.prepare(tmp_path, "0.0.0.0", read_only=True)


def test_read_only_state_with_a_bad_ca(tmp_path):
    replica_state(tmp_path)
    (tmp_path / "ca.key").write_bytes(CertificateAuthority.create("x").issue_client("u").key_pem)
    with pytest.raises(state.StateError, match=r"ca\.key: not the private key of ca\.crt"):
        state.GatewayState.prepare(tmp_path, "0.0.0.0", read_only=True)
    (tmp_path / "ca.crt").write_text("garbage")
    with pytest.raises(state.StateError, match=r"ca\.crt: not a PEM certificate"):
        state.GatewayState.prepare(tmp_path, "0.0.0.0", read_only=True)


def test_read_only_state_expiring_warns_and_expired_fails(tmp_path):
    replica_state(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "serving.crt").read_bytes())
    soon = cert.not_valid_after_utc - datetime.timedelta(days=3)
    prepared = state.GatewayState.prepare(tmp_path, "0.0.0.0", soon, read_only=True)
    (warning,) = prepared.warnings
    assert warning.startswith(f"{tmp_path / 'serving.crt'} expires on ")
    later = cert.not_valid_after_utc + datetime.timedelta(days=1)
    with pytest.raises(state.StateError, match=r"serving\.crt: expired on "):
        state.GatewayState.prepare(tmp_path, "0.0.0.0", later, read_only=True)


def test_state_errors_never_show_key_material(tmp_path):
    made = replica_state(tmp_path)
    (tmp_path / "serving.key").write_bytes(made.ca.issue_client("x").key_pem)
    with pytest.raises(state.StateError) as error:
        state.GatewayState.prepare(tmp_path, "0.0.0.0", read_only=True)
    assert "PRIVATE" not in str(error.value)
    assert "BEGIN" not in str(error.value)


def test_host_routing_wildcard_is_covered_and_a_state_without_it_reissued(tmp_path):
    before = state.GatewayState.prepare(tmp_path, "127.0.0.1", names=["gw.example"])
    assert "*.clusters.karpor" not in sans(before.serving.cert_pem)
    again = state.GatewayState.prepare(
        tmp_path, "127.0.0.1", names=["gw.example"], wildcards=["*.clusters.karpor"]
    )
    assert again.serving.issued_because == "it does not cover *.clusters.karpor"
    assert {"*.clusters.karpor", "gw.example", "127.0.0.1"} <= set(sans(again.serving.cert_pem))
    kept = state.GatewayState.prepare(tmp_path, "127.0.0.1", wildcards=["*.clusters.karpor"])
    assert kept.serving.issued_because is None


def test_read_only_state_without_the_wildcard_warns(tmp_path):
    directory = tmp_path / "state"
    replica_state(directory)
    prepared = state.GatewayState.prepare(
        directory, "0.0.0.0", names=SERVICE_NAMES, read_only=True, wildcards=["*.c.example"]
    )
    assert len(prepared.warnings) == 1
    assert "does not cover *.c.example" in prepared.warnings[0]


def test_record_keeps_the_host_suffix(tmp_path):
    record = state.GatewayRecord("/srv/clusters", "https://gw:8443", "clusters.karpor")
    assert state.GatewayRecord.from_json(record.to_json()) == record
    assert state.GatewayRecord.from_json(b'{"server": "https://gw"}').host_suffix is None
