"""The token file is re-read on change, record by record: a token removed
in an edit that also brings a bad line stops working at the next reload,
the good tokens keep working, and the bad line is logged without its token.

A real gateway (one worker) with ``authentication.tokenFile``, in front of
the simulated clusters; raw HTTPS requests, and kubectl with a token.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from support.access import write_tokens, write_yaml
from support.gateway import client_context, request, start_gateway
from support.kubectl import Kubectl, find_kubectls
from support.sim import SimRun
from support.waits import wait_for

KEPT = "kept-token-0123456789"
REMOVED = "removed-token-0123456789"
BAD = "bad-line-token-0123456789"
PATH = "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces"


def test_a_removed_token_stops_working_even_when_another_line_is_bad(
    sim_clusters: SimRun, tmp_path: Path
) -> None:
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    sim = sim_clusters["sim-1"]
    (clusters / "sim-1.yaml").write_text(sim.cluster_file.read_text())
    tokens = write_tokens(tmp_path / "tokens.csv", {KEPT: ("kept", ()), REMOVED: ("gone", ())})
    write_yaml(tmp_path / "config.yaml", {"authentication": {"tokenFile": str(tokens)}})
    gateway = start_gateway(
        clusters,
        tmp_path / "state",
        "--workers",
        "1",
        "--config",
        str(tmp_path / "config.yaml"),
    )
    try:
        context = client_context(gateway.ca_pem)

        def code(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            return request(gateway.port, PATH, context, headers=headers).status

        assert code(KEPT) == 200 and code(REMOVED) == 200
        # one edit: REMOVED goes, a line with too few fields comes
        tokens.write_text(f'{KEPT},kept,uid-0,""\n{BAD},nobody\n')
        wait_for(lambda: code(REMOVED) == 401, 10, "the removed token refused", step=0.2)
        assert code(KEPT) == 200
        assert code(BAD) == 401
        found = find_kubectls()
        if found:
            kubeconfig = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "gw",
                        "cluster": {
                            "server": f"{gateway.url}/apis/cluster.karpor.io/v1beta1/"
                            "clusters/sim-1/proxy",
                            "certificate-authority": str(gateway.state_dir / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": REMOVED}}],
                "contexts": [{"name": "c", "context": {"cluster": "gw", "user": "u"}}],
                "current-context": "c",
            }
            path = tmp_path / "removed.kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig))
            kubectl = Kubectl(next(iter(found.values())), path, "removed")
            result = kubectl.run("get", "namespaces", check=False)
            assert result.returncode != 0
            assert "Unauthorized" in result.stderr or "logged in" in result.stderr
        gateway.process.wait_for_line(r"tokens\.csv: line 2: must have at least 3 columns")
    finally:
        gateway.stop()
    log = gateway.process.output
    assert "tokens.csv: line 2: must have at least 3 columns" in log
    assert BAD not in log and REMOVED not in log
