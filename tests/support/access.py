"""Helpers of the access tests: certificates, token and policy files, an exec plugin.

:func:`exec_plugin` writes a client-go exec credential plugin (a Python
script) that appends one line per run to a count file and prints an
``ExecCredential`` holding a given token, valid for ``lifetime`` seconds.
"""

from __future__ import annotations

import datetime
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from karpor.auth.ca import CertificateAuthority, IssuedCertificate


@dataclass(frozen=True)
class Cert:
    """A client certificate and key (PEM)."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)

    @classmethod
    def of(cls, issued: IssuedCertificate) -> Cert:
        """From an issued certificate."""
        return cls(issued.cert_pem, issued.key_pem)


def issue(
    ca: CertificateAuthority,
    user: str,
    groups: tuple[str, ...] = (),
    ttl: datetime.timedelta = datetime.timedelta(days=1),
) -> Cert:
    """A client certificate of ``ca`` for ``user`` in ``groups``."""
    return Cert.of(ca.issue_client(user, groups, ttl))


def expired(ca: CertificateAuthority, user: str) -> Cert:
    """A certificate of ``ca`` for ``user`` that expired a day ago."""
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    with mock.patch("karpor.auth.ca._now", return_value=past):
        return issue(ca, user, (), datetime.timedelta(days=1))


def write_tokens(path: Path, entries: dict[str, tuple[str, tuple[str, ...]]]) -> Path:
    """A kube-apiserver token file: token -> (user, groups)."""
    lines = []
    for i, (token, (user, groups)) in enumerate(entries.items()):
        lines.append(f'{token},{user},uid-{i},"{",".join(groups)}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def write_yaml(path: Path, obj: Any) -> Path:
    """``obj`` as YAML in ``path``."""
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


_PLUGIN = """#!{python}
import datetime, json, os, sys, time
with open({count!r}, "a") as f:
    f.write(repr(time.time()) + "\\n")
if {fail!r}:
    sys.stderr.write("the plugin is broken on purpose\\n")
    sys.exit(3)
expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds={lifetime!r})
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential", info
json.dump({{
    "kind": "ExecCredential",
    "apiVersion": "client.authentication.k8s.io/v1",
    "status": {{
        "token": {token!r},
        "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }},
}}, sys.stdout)
"""


def exec_plugin(
    path: Path, token: str, count_file: Path, lifetime: float = 3600, fail: bool = False
) -> Path:
    """Write an executable exec plugin at ``path`` (see the module docstring)."""
    path.write_text(
        _PLUGIN.format(
            python=sys.executable, count=str(count_file), token=token, lifetime=lifetime, fail=fail
        )
    )
    path.chmod(0o755)
    return path


def runs(count_file: Path) -> list[float]:
    """The times the plugin ran."""
    if not count_file.exists():
        return []
    return [float(line) for line in count_file.read_text().split()]


def exec_cluster(name: str, endpoint: str, ca_pem_b64: str, plugin: Path) -> dict[str, Any]:
    """A Cluster document whose credential is the exec ``plugin``."""
    return {
        "apiVersion": "cluster.karpor.io/v1beta1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "access": {
                "endpoint": endpoint,
                "caBundle": ca_pem_b64,
                "credential": {
                    "type": "OIDC",
                    "execConfig": {
                        "command": str(plugin),
                        "apiVersion": "client.authentication.k8s.io/v1",
                    },
                },
            }
        },
    }


def status(body: bytes) -> dict[str, Any]:
    """A ``Status`` body."""
    obj: dict[str, Any] = json.loads(body)
    assert obj["kind"] == "Status", obj
    return obj
