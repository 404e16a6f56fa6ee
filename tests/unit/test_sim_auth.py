"""karpor.sim.auth: credentials, impersonation, SelfSubjectReview."""

from __future__ import annotations

import pytest
from OpenSSL import crypto

from karpor.auth.ca import CertificateAuthority
from karpor.auth.identity import Identity
from karpor.kube.status import ApiError
from karpor.sim.auth import (
    DEFAULT_TOKEN_IDENTITY,
    Authenticator,
    bearer_token,
    impersonate,
    self_subject_review,
)

CA = CertificateAuthority.create("test-ca")


def _x509(pem: bytes) -> crypto.X509:
    return crypto.load_certificate(crypto.FILETYPE_PEM, pem)


def test_token_and_certificate() -> None:
    auth = Authenticator("s3cret", [CA.cert_pem])
    token_identity = auth.authenticate("Bearer s3cret", None)
    assert token_identity is not None
    assert token_identity.user == DEFAULT_TOKEN_IDENTITY.user
    assert "system:authenticated" in token_identity.groups
    assert auth.authenticate("Bearer wrong", None) is None
    assert auth.authenticate(None, None) is None
    cert = CA.issue_client("carol", ["team"])
    identity = auth.authenticate(None, _x509(cert.cert_pem))
    assert identity == Identity("carol", ("team", "system:authenticated"))
    stranger = CertificateAuthority.create("other").issue_client("mallory")
    assert auth.authenticate(None, _x509(stranger.cert_pem)) is None
    assert "s3cret" not in repr(auth)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None)],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


def test_impersonation() -> None:
    caller = Identity("admin", ("system:masters", "system:authenticated"))
    assert impersonate(caller, {}) is caller
    alice = impersonate(
        caller,
        {
            "impersonate-user": ["alice"],
            "impersonate-group": ["devs", "ops"],
            "impersonate-uid": ["u-1"],
            "impersonate-extra-scopes%2fx": ["a", "b"],
        },
    )
    assert alice == Identity(
        "alice", ("devs", "ops", "system:authenticated"), "u-1", {"scopes/x": ("a", "b")}
    )
    sa = impersonate(caller, {"impersonate-user": ["system:serviceaccount:ns1:robot"]})
    assert sa.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:ns1",
        "system:authenticated",
    )
    anon = impersonate(caller, {"impersonate-user": ["system:anonymous"]})
    assert anon.groups == ("system:unauthenticated",)
    with pytest.raises(ApiError) as err:
        impersonate(caller, {"impersonate-group": ["devs"]})
    assert err.value.code == 500


def test_self_subject_review() -> None:
    review = self_subject_review("v1beta1", Identity("bob", ("g",), "", {"k": ("v",)}))
    assert review["apiVersion"] == "authentication.k8s.io/v1beta1"
    assert review["kind"] == "SelfSubjectReview"
    assert review["status"]["userInfo"] == {
        "username": "bob",
        "groups": ["g"],
        "extra": {"k": ["v"]},
    }
