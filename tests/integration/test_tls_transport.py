"""TLS on the socket (:mod:`karpor.net.tlstransport`) over real loopback sockets.

The scenarios run in one subprocess (``support.tlsscenarios``: a reactor
cannot be restarted inside pytest); each test checks one scenario's record.
Every scenario runs twice: with the socket transport (``fast``) and with
its fallback, Twisted's own TLS (``twisted``, :mod:`karpor.net.twistedtls`),
which must behave the same but for bulk mode and half-close (it has
neither) and for when a client hears of a handshake whose name check fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["fast", "twisted"])
def results(request: pytest.FixtureRequest) -> dict[str, Any]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore::DeprecationWarning",
            "-m",
            "support.tlsscenarios",
            request.param,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    assert "error" not in out, out["error"]
    out["implementation"] = request.param
    return out


def test_alpn_h2_and_the_client_certificate_reach_the_server(results: dict[str, Any]) -> None:
    r = results["echo_h2_with_client_cert"]
    assert r["handshake"] and r["alpn"] == "h2" and r["server_alpn"] == "h2"
    assert r["server_peer"] == "alice"
    assert r["received"] == "echo:hello"
    assert r["reason"].startswith("ConnectionDone")


def test_http11_by_name_without_a_client_certificate(results: dict[str, Any]) -> None:
    r = results["echo_http11"]
    assert r["alpn"] == "http/1.1" and r["server_peer"] is None
    assert r["received"] == "echo:hi"


def test_data_written_before_the_handshake_is_delivered(results: dict[str, Any]) -> None:
    r = results["write_before_handshake"]
    assert r["received"] == "echo:early bird"


def test_8_mib_arrive_intact_with_backpressure(results: dict[str, Any]) -> None:
    r = results["large_upload"]
    assert r["server_bytes"] == r["expected_bytes"]
    assert r["server_digest"] == r["expected_digest"]
    assert r["paused"] > 0, "the producer was never paused"
    assert r["received"] == "got it all"


def test_8_mib_arrive_intact_in_bulk_mode_switched_mid_stream(results: dict[str, Any]) -> None:
    """Bulk mode (a spliced connection's): the client from its handshake on,
    the server from inside its first read; backpressure still holds and the
    close is clean."""
    r = results["bulk_upload"]
    assert r["server_bulk"] is (results["implementation"] == "fast")
    assert r["server_bytes"] == r["expected_bytes"]
    assert r["server_digest"] == r["expected_digest"]
    assert r["paused"] > 0, "the producer was never paused"
    assert r["received"] == "got it all"
    assert r["reason"].startswith("ConnectionDone")


def test_a_name_mismatch_fails_before_anything_is_sent(results: dict[str, Any]) -> None:
    r = results["wrong_name"]
    # Twisted's TLS tells the protocol of the handshake, then ends the
    # connection with the VerificationError: what the protocol wrote is dropped
    assert not r["handshake"] or results["implementation"] == "twisted"
    assert r["reason"].startswith("VerificationError") and "not-the-server.example" in r["reason"]
    assert r["server_bytes"] == 0


def test_an_untrusted_certificate_fails_the_handshake(results: dict[str, Any]) -> None:
    r = results["untrusted_ca"]
    assert not r["handshake"] and "certificate verify failed" in r["reason"]
    assert r["server_bytes"] == 0


def test_insecure_skips_name_and_chain_checks(results: dict[str, Any]) -> None:
    r = results["insecure_skips_verification"]
    assert r["handshake"] and r["received"] == "echo:x"


def test_half_close_lets_the_server_answer_after_the_clients_end(results: dict[str, Any]) -> None:
    r = results["half_close"]
    if results["implementation"] == "twisted":
        # a close_notify ends a connection of Twisted's TLS both ways
        assert r["server_bytes"] == len(b"last words") and r["reason"]
        return
    assert r["server_half"] is True
    assert r["received"] == "echo:last wordsbye after half-close"
    assert r["reason"].startswith("ConnectionDone")


def test_a_name_is_resolved_and_its_addresses_tried(results: dict[str, Any]) -> None:
    r = results["by_name"]
    assert r["handshake"] and r["received"] == "echo:named"


def test_an_unresolvable_name_fails_to_connect(results: dict[str, Any]) -> None:
    r = results["unresolvable_name"]
    assert "no-such-host.invalid" in r["connect_error"]


def test_writes_made_while_handling_a_read_all_arrive_before_the_close(
    results: dict[str, Any],
) -> None:
    r = results["pieces_then_close"]
    assert r["received"] == "one,two,three"
    assert r["reason"].startswith("ConnectionDone")
