"""The files a bench run needs: certificates, tokens, the pod, configs of every peer.

All of it lives in one scratch directory (:class:`Workspace`), made anew for
each run and removed afterwards unless ``--keep`` asks otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from karpor.auth.ca import CertificateAuthority

#: the object the request/response workloads GET
POD_PATH = "/api/v1/namespaces/default/pods/bench"
#: the cluster the gateway serves the upstream as
CLUSTER_NAME = "bench"
#: the gateway path of the same object
KARPOR_PREFIX = f"/apis/cluster.karpor.io/v1beta1/clusters/{CLUSTER_NAME}/proxy"
#: the user the bench authenticates to karpor as
BENCH_USER = "bench"
BENCH_GROUPS = ("system:masters",)


def pod_json() -> bytes:
    """A Kubernetes-style pod, as a kube-apiserver would render it (about 3 KB)."""
    labels = {"app": "bench", "pod-template-hash": "6d4cf56db6", "tier": "backend"}
    container: dict[str, Any] = {
        "name": "app",
        "image": "registry.example.com/team/app:1.27.3",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
        "env": [{"name": f"SETTING_{i}", "value": f"value-{i}"} for i in range(6)],
        "resources": {
            "limits": {"cpu": "500m", "memory": "256Mi"},
            "requests": {"cpu": "100m", "memory": "128Mi"},
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {
                "name": "kube-api-access-x7k2p",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            }
        ],
    }
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "bench",
            "namespace": "default",
            "uid": "0b8e6f5e-3f1c-4a43-9d39-6f3c1a8e2b71",
            "resourceVersion": "123456",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": labels,
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "bench-6d4cf56db6",
                    "uid": "5a1d3c2e-9b7f-4e11-8a6d-2c4b9e0f7a13",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [container],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": "node-1",
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420}}],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2025-01-01T00:00:05Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "hostIP": "10.0.0.11",
            "podIP": "10.244.1.17",
            "podIPs": [{"ip": "10.244.1.17"}],
            "startTime": "2025-01-01T00:00:00Z",
            "containerStatuses": [
                {
                    "name": "app",
                    "state": {"running": {"startedAt": "2025-01-01T00:00:04Z"}},
                    "ready": True,
                    "restartCount": 0,
                    "image": "registry.example.com/team/app:1.27.3",
                    "imageID": "registry.example.com/team/app@sha256:" + "ab" * 32,
                    "containerID": "containerd://" + "cd" * 32,
                    "started": True,
                }
            ],
            "qosClass": "Burstable",
        },
    }
    return json.dumps(pod, indent=2).encode() + b"\n"


@dataclass(frozen=True)
class Workspace:
    """The scratch directory of one run and the secrets and files in it."""

    root: Path
    #: the upstream's bearer token (the cluster credential the proxies inject)
    upstream_token: str
    #: the bench user's bearer token for karpor (the token file)
    user_token: str

    @classmethod
    def create(cls, root: Path) -> Workspace:
        """Make the directory, the upstream CA and serving certificate, the tokens."""
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        ws = cls(root, secrets.token_hex(24), secrets.token_hex(24))
        ca = CertificateAuthority.create("bench-upstream-ca")
        (root / "upstream-ca.crt").write_bytes(ca.cert_pem)
        ca.issue_server("bench-upstream", ["127.0.0.1", "localhost"]).write(
            root / "upstream.crt", root / "upstream.key"
        )
        www = root / "www"
        www.mkdir(exist_ok=True)
        (www / "pod.json").write_bytes(pod_json())
        return ws

    @property
    def upstream_ca(self) -> Path:
        """The upstream CA certificate (PEM)."""
        return self.root / "upstream-ca.crt"

    def cluster_document(self, name: str, port: int) -> dict[str, Any]:
        """A Cluster manifest for the upstream at ``127.0.0.1:port``."""
        return {
            "apiVersion": "cluster.karpor.io/v1beta1",
            "kind": "Cluster",
            "metadata": {"name": name, "labels": {"bench": "true"}},
            "spec": {
                "provider": "bench",
                "access": {
                    "endpoint": f"https://127.0.0.1:{port}",
                    "caBundle": base64.b64encode(self.upstream_ca.read_bytes()).decode(),
                    "credential": {
                        "type": "ServiceAccountToken",
                        "serviceAccountToken": self.upstream_token,
                    },
                },
            },
        }

    def clusters_dir(self, name: str, port: int, count: int = 1) -> Path:
        """A clusters directory with ``count`` Cluster files for the upstream.

        The first is named :data:`CLUSTER_NAME`, the others ``bench-2`` …
        """
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        for index in range(1, count + 1):
            cluster = CLUSTER_NAME if index == 1 else f"{CLUSTER_NAME}-{index}"
            (directory / f"{cluster}.yaml").write_text(
                yaml.safe_dump(self.cluster_document(cluster, port))
            )
        return directory

    def gateway_config(self, oidc: bool = True) -> Path:
        """The karpor ``--config`` file: token authentication from a token file,
        and (``oidc``) the OpenID provider the upstream plays when
        :meth:`oidc_files` made it."""
        tokens = self.root / "tokens.csv"
        tokens.write_text(f'{self.user_token},{BENCH_USER},bench-uid,"{",".join(BENCH_GROUPS)}"\n')
        os.chmod(tokens, 0o600)
        authentication: dict[str, Any] = {"tokenFile": str(tokens)}
        issuer = self.root / "oidc-issuer"
        if oidc and issuer.exists():
            authentication["jwt"] = [
                {
                    "issuer": {
                        "url": issuer.read_text(),
                        "audiences": ["karpor"],
                        "certificateAuthority": self.upstream_ca.read_text(),
                    },
                    "claimMappings": {
                        "username": {"claim": "sub", "prefix": ""},
                        "groups": {"claim": "groups", "prefix": "oidc:"},
                    },
                }
            ]
        config = self.root / ("karpor.yaml" if oidc else "karpor-no-oidc.yaml")
        config.write_text(yaml.safe_dump({"authentication": authentication}))
        return config

    def oidc_files(self, issuer: str) -> None:
        """The upstream as an OpenID provider at ``issuer``: its discovery
        document and JWKS (``www/``, served by the upstream nginx) and an ID
        token for the bench user (RS256, valid a day; :attr:`oidc_token`)."""
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: PLC0415

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "kid": "bench",
            "alg": "RS256",
            "use": "sig",
            "n": b64(numbers.n.to_bytes(256, "big")),
            "e": b64(numbers.e.to_bytes(3, "big")),
        }
        www = self.root / "www"
        (www / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
        (www / "openid-configuration.json").write_text(
            json.dumps(
                {
                    "issuer": issuer,
                    "jwks_uri": f"{issuer}/jwks",
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )
        )
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": "karpor",
            "sub": BENCH_USER,
            "groups": ["bench"],
            "iat": now,
            "exp": now + 86400,
        }
        head = b64(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        (self.root / "oidc-token").write_text(f"{head}.{body}.{b64(signature)}")
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (self.root / "oidc.key").write_bytes(pem)
        os.chmod(self.root / "oidc.key", 0o600)
        (self.root / "oidc-issuer").write_text(issuer)

    @property
    def oidc_token(self) -> str | None:
        """The bench user's ID token (``None`` before :meth:`oidc_files`)."""
        path = self.root / "oidc-token"
        return path.read_text() if path.exists() else None

    def upstream_kubeconfig(self, port: int) -> Path:
        """A kubeconfig to the upstream with its bearer token (for ``kubectl proxy``)."""
        path = self.root / "upstream.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "upstream",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": base64.b64encode(
                            self.upstream_ca.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "bench", "user": {"token": self.upstream_token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "upstream", "user": "bench"}}],
            "current-context": "bench",
        }
        path.write_text(yaml.safe_dump(config))
        os.chmod(path, 0o600)
        return path

    def client_certificate(self, state_dir: Path) -> tuple[Path, Path]:
        """A client certificate for the bench user from the gateway CA in ``state_dir``."""
        ca = CertificateAuthority.load(state_dir)
        cert, key = self.root / "client.crt", self.root / "client.key"
        ca.issue_client(BENCH_USER, BENCH_GROUPS).write(cert, key)
        return cert, key
