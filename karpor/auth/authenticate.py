"""Authentication of callers by client certificate (the gateway CA's).

The TLS layer asks for a client certificate and accepts any
(``karpor.tls.server_options``); this module decides, once per connection,
whether the certificate was issued by a trusted CA (the verdict of the
signature check is kept per certificate) and is within its validity period
(checked every time), and turns it into an
:class:`~karpor.auth.identity.Identity` (``CN`` = user, each ``O`` = a
group), as a kube-apiserver does.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from karpor.auth.identity import Identity

#: signature verdicts a :class:`CertificateAuthenticator` keeps (the oldest
#: goes first)
VERDICTS_KEPT = 4096


class CertificateAuthenticator:
    """Maps a verified client certificate to an identity."""

    def __init__(self, ca_certs_pem: Sequence[bytes]) -> None:
        self._cas: list[x509.Certificate] = []
        for pem in ca_certs_pem:
            self._cas.extend(x509.load_pem_x509_certificates(pem))
        #: whether a certificate (equal: the same DER bytes) was issued by
        #: one of the CAs: the signature check is the costly part of a new
        #: connection's authentication (~0.2 ms), and a kubectl user's
        #: every connection presents the same certificate
        self._verdicts: dict[x509.Certificate, bool] = {}

    def _trusted(self, cert: x509.Certificate) -> bool:
        verdict = self._verdicts.get(cert)
        if verdict is None:
            verdict = any(self._issued_by(cert, ca) for ca in self._cas)
            if len(self._verdicts) >= VERDICTS_KEPT:
                del self._verdicts[next(iter(self._verdicts))]  # the oldest
            self._verdicts[cert] = verdict
        return verdict

    def identify(self, peer: crypto.X509 | None) -> Identity | None:
        """The identity of the certificate ``peer``, or ``None`` when there is
        none, it is not issued by a trusted CA, or it is outside its validity."""
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
        return Identity(user=user, groups=groups)

    @staticmethod
    def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
