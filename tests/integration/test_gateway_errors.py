"""Errors through the gateway, each a Kubernetes Status with the right code.

Unknown cluster 404, no client certificate 401, a certificate from another
CA 401, a cluster on a closed port 503; the own API's 404 and 405.
"""

from __future__ import annotations

from support.gateway import CLOSED_CLUSTER, client_context, credentials_of, request

from karpor.auth.ca import CertificateAuthority

#: the gateway fixtures (gateway, gateway_clusters_dir, gateway_kubeconfig), registered
#: once for the session however many modules name them
pytest_plugins = ("support.gateway",)

PROXY = "/apis/cluster.karpor.io/v1beta1/clusters"


def assert_status(response, code, reason, message=None):
    assert response.status == code, response.body
    assert response.headers["content-type"].startswith("application/json")
    status = response.json()
    assert status["kind"] == "Status"
    assert status["apiVersion"] == "v1"
    assert status["status"] == "Failure"
    assert status["code"] == code
    assert status["reason"] == reason
    if message is not None:
        assert status["message"] == message
    return status


def admin_context(kubeconfig):
    ca, cert, key = credentials_of(kubeconfig)
    return client_context(ca, cert, key)


def test_unknown_cluster_is_404(gateway, gateway_kubeconfig):
    response = request(
        gateway.port, f"{PROXY}/nope/proxy/api/v1/pods", admin_context(gateway_kubeconfig)
    )
    status = assert_status(response, 404, "NotFound", 'clusters.cluster.karpor.io "nope" not found')
    assert status["details"]["name"] == "nope"


def test_no_client_certificate_is_401(gateway):
    context = client_context(gateway.ca_pem)
    for path in (f"{PROXY}/sim-1/proxy/api/v1/namespaces", f"{PROXY}", "/apis"):
        assert_status(request(gateway.port, path, context), 401, "Unauthorized", "Unauthorized")


def test_certificate_from_another_ca_is_401(gateway):
    foreign = CertificateAuthority.create("not-the-gateway").issue_client(
        "admin", ["system:masters"]
    )
    context = client_context(gateway.ca_pem, foreign.cert_pem, foreign.key_pem)
    for path in (f"{PROXY}/sim-1/proxy/api/v1/namespaces", PROXY):
        assert_status(request(gateway.port, path, context), 401, "Unauthorized", "Unauthorized")


def test_cluster_on_a_closed_port_is_503(gateway, gateway_kubeconfig):
    response = request(
        gateway.port,
        f"{PROXY}/{CLOSED_CLUSTER}/proxy/api/v1/namespaces",
        admin_context(gateway_kubeconfig),
    )
    status = assert_status(response, 503, "ServiceUnavailable")
    assert CLOSED_CLUSTER in status["message"]
    assert "unused" not in response.body.decode()  # the cluster's token never shows


def test_health_and_version_need_no_certificate(gateway):
    context = client_context(gateway.ca_pem)
    for path in ("/healthz", "/livez", "/readyz"):
        response = request(gateway.port, path, context)
        assert (response.status, response.body) == (200, b"ok")
    version = request(gateway.port, "/version", context).json()
    assert version["gitVersion"].startswith("v1.")


def test_own_api_errors(gateway, gateway_kubeconfig):
    context = admin_context(gateway_kubeconfig)
    assert_status(request(gateway.port, "/apis/apps/v1", context), 404, "NotFound")
    assert_status(
        request(gateway.port, f"{PROXY}/sim-1", context, method="DELETE"),
        405,
        "MethodNotAllowed",
    )


def test_aggregated_discovery_names_its_version(gateway, gateway_kubeconfig):
    context = admin_context(gateway_kubeconfig)
    for version in ("v2", "v2beta1"):
        accept = (
            f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList,"
            "application/json"
        )
        response = request(gateway.port, "/apis", context, headers={"Accept": accept})
        assert response.status == 200
        assert response.headers["content-type"] == (
            f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
        )
        [group] = response.json()["items"]
        assert group["versions"][0]["resources"][0]["responseKind"]["kind"] == "Cluster"
