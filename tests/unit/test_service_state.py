"""The state directory: the CA, the serving certificate and its renewal, the record."""

import datetime
import os

import pytest
from cryptography import x509

from karpor.auth.ca import CertificateAuthority
from karpor.server import state


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
