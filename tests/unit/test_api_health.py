"""/readyz fails until loaded and while draining; the supervisor shows in verbose output."""

from karpor.gatewayapi.health import Health


def test_not_ready_until_loaded():
    health = Health()
    code, body = health.report("readyz", verbose=False)
    assert code == 500
    assert b"[-]clusters-loaded failed" in body
    assert health.report("livez", verbose=False) == (200, b"ok")
    health.loaded = True
    assert health.report("readyz", verbose=False) == (200, b"ok")


def test_draining_fails_readyz_first():
    health = Health(loaded=True)
    health.draining = True
    code, body = health.report("readyz", verbose=False)
    assert code == 500
    assert b"[-]shutdown failed: reason withheld" in body  # kube's words
    assert b"[-]shutdown failed: draining" in health.report("readyz", verbose=True)[1]
    assert health.report("healthz", verbose=False) == (200, b"ok")


def test_supervisor_state_in_verbose_output():
    health = Health(loaded=True)
    health.supervisor = {
        "pid": 10,
        "workers": [{"slot": 0, "pid": 11, "generation": 3, "state": "ready"}],
        "restarts": 2,
        "rolls": 1,
        "crashLooping": [],
    }
    code, body = health.report("healthz", verbose=True)
    assert code == 200
    text = body.decode()
    assert "[+]supervisor ok: supervisor pid 10; workers: slot 0 pid 11 gen 3 ready" in text
    assert "restarts 2" in text


def test_a_failure_without_verbose_withholds_every_detail():
    health = Health(loaded=True, draining=True, worker="pid 11 generation 2")
    health.supervisor = {"pid": 10, "workers": [], "restarts": 3}
    code, body = health.report("readyz", verbose=False)
    assert code == 500
    assert body == (
        b"[+]ping ok\n[+]clusters-loaded ok\n[-]shutdown failed: reason withheld\n"
        b"[+]worker ok\n[+]supervisor ok\nreadyz check failed\n"
    )


def test_a_clusters_directory_that_cannot_be_read_is_a_warning():
    health = Health(loaded=True)
    health.clusters_directory = "/c: cannot list: No such file or directory; kept"
    for endpoint in ("healthz", "readyz"):
        code, body = health.report(endpoint, verbose=True)
        assert code == 200
        assert (
            b"[+]clusters-directory ok: warning: /c: cannot list: No such file or directory; kept"
            in body
        )
        assert health.report(endpoint, verbose=False) == (200, b"ok")
    assert b"clusters-directory" not in health.report("livez", verbose=True)[1]
    health.clusters_directory = ""
    assert b"clusters-directory" not in health.report("healthz", verbose=True)[1]


def test_oidc_issuers_in_verbose_output_never_fail():
    issuers = [
        ("https://a.example", "ready", ""),
        ("https://b.example", "failing", "the JWKS answered HTTP 500"),
    ]
    health = Health(loaded=True, oidc_issuers=lambda: issuers)
    for endpoint in ("healthz", "readyz"):
        code, body = health.report(endpoint, verbose=True)
        assert code == 200
        assert (
            b"[+]oidc-issuers ok: https://a.example ready; "
            b"https://b.example failing (the JWKS answered HTTP 500)" in body
        )
        assert health.report(endpoint, verbose=False) == (200, b"ok")
    assert b"oidc-issuers" not in health.report("livez", verbose=True)[1]
    assert b"oidc-issuers" not in Health(loaded=True).report("readyz", verbose=True)[1]
