"""Authentication of callers by client certificate (the gateway CA's).

The TLS layer asks for a client certificate and accepts any
(``karpor.net.tls.server_options``); this module decides, once per connection,
whether the certificate was issued by a trusted CA and may authenticate a
client (the verdict is kept per certificate) and is within its validity
period (checked every time), and turns it into an
:class:`~karpor.auth.identity.Identity` (``CN`` = user, each ``O`` = a
group), as a kube-apiserver does.

A client certificate needs the ``clientAuth`` extended key usage, as
kube-apiserver requires (Go's ``x509.Verify`` with
``ExtKeyUsageClientAuth``): the certificate and its CA must each either
list ``clientAuth`` (or ``anyExtendedKeyUsage``) or carry no extended key
usage extension at all (no extension: any usage, as in Go).  A serving
certificate (``serverAuth`` only, as the gateway CA issues them) is
refused.  The keys in ``refused_keys`` are refused whatever their
certificate says: the gateway's own serving key, which every replica
holds, is never a client identity, even in a serving certificate made
elsewhere without an extended key usage.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

from karpor.auth.identity import Identity

#: signature verdicts a :class:`CertificateAuthenticator` keeps (the oldest
#: goes first)
VERDICTS_KEPT = 4096

_CLIENT_USAGES = frozenset(
    {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)


def permits_client_auth(cert: x509.Certificate) -> bool:
    """Whether ``cert`` may be used for client authentication as Go's
    ``x509.Verify`` decides it for ``ExtKeyUsageClientAuth``: no extended
    key usage extension (any usage), or one listing ``clientAuth`` or
    ``anyExtendedKeyUsage``."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return any(usage in _CLIENT_USAGES for usage in usages)


def public_key_der(cert: x509.Certificate) -> bytes:
    """The DER ``SubjectPublicKeyInfo`` of ``cert`` (what :class:`CertificateAuthenticator`
    compares with its ``refused_keys``)."""
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class CertificateAuthenticator:
    """Maps a verified client certificate to an identity.

    ``refused_keys``: DER ``SubjectPublicKeyInfo`` of keys never accepted
    (:func:`public_key_der` of the gateway's serving certificate)."""

    def __init__(self, ca_certs_pem: Sequence[bytes], refused_keys: Sequence[bytes] = ()) -> None:
        self._cas: list[x509.Certificate] = []
        for pem in ca_certs_pem:
            self._cas.extend(x509.load_pem_x509_certificates(pem))
        self._refused_keys = frozenset(refused_keys)
        #: whether a certificate (equal: the same DER bytes) was issued by
        #: one of the CAs for client authentication: the signature check is
        #: the costly part of a new connection's authentication (~0.2 ms),
        #: and a kubectl user's every connection presents the same certificate
        self._verdicts: dict[x509.Certificate, bool] = {}

    def _trusted(self, cert: x509.Certificate) -> bool:
        verdict = self._verdicts.get(cert)
        if verdict is None:
            verdict = (
                permits_client_auth(cert)
                and not (self._refused_keys and public_key_der(cert) in self._refused_keys)
                and any(self._issued_by(cert, ca) and permits_client_auth(ca) for ca in self._cas)
            )
            if len(self._verdicts) >= VERDICTS_KEPT:
                del self._verdicts[next(iter(self._verdicts))]  # the oldest
            self._verdicts[cert] = verdict
        return verdict

    def identify(self, peer: crypto.X509 | None) -> Identity | None:
        """The identity of the certificate ``peer``, or ``None`` when there is
        none, it is not issued by a trusted CA for client authentication
        (see the module docstring), or it is outside its validity."""
        if peer is None:
            return None
        cert = peer.to_cryptography()
        return self.identify_certificate(cert)

    def identify_certificate(
        self, cert: x509.Certificate, now: datetime.datetime | None = None
    ) -> Identity | None:
        """As :meth:`identify`, for a ``cryptography`` certificate."""
        now = now or datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return None
        if not self._trusted(cert):
            return None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            return None
        user = str(names[0].value)
        groups = tuple(
            str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        )
        return Identity(user=user, groups=groups, client_certificate=True)

    @staticmethod
    def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
