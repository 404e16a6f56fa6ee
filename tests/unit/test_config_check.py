"""``karpor check``: output, exit status, and the shipped examples."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from karpor.app.settings import load_settings
from karpor.cli import main
from karpor.config.directory import load_directory

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
apiVersion: cluster.karpor.io/v1beta1
kind: Cluster
metadata: {name: good}
spec:
  access:
    endpoint: https://10.0.0.1:6443
    insecure: true
    credential: {type: ServiceAccountToken, serviceAccountToken: SECRET-TOKEN}
"""


def test_clean_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    assert main(["check", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "NAME   ENDPOINT                CREDENTIAL            DOCUMENT   FILE",
        f"good   https://10.0.0.1:6443   ServiceAccountToken   1          {tmp_path}/good.yaml",
    ]
    assert err == ""
    assert "SECRET" not in out


def test_a_tunnel_cluster_is_listed_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "edge.yaml").write_text(
        "apiVersion: cluster.karpor.io/v1beta1\nkind: Cluster\nmetadata: {name: edge}\n"
        "spec: {access: {tunnel: true}}\n"
    )
    assert main(["check", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[1].split()[:3] == ["edge", "(tunnel)", "none"]


def test_problems_go_to_stderr_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(GOOD + "---\n" + GOOD.replace("https://10", "http://10"))
    assert main(["check", "-q", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{tmp_path}/a.yaml: document 2: spec.access.endpoint: must be an https:// URL (found http://)"
    ]


def test_empty_directory_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-q", str(tmp_path)]) == 0
    assert "no *.yaml or *.yml files" in capsys.readouterr().err


def test_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "good.yaml").write_text(GOOD)
    (tmp_path / "karpor.yaml").write_text("clustersDir: clusters\n")
    assert main(["check", "-q", "--config", str(tmp_path / "karpor.yaml")]) == 0
    (tmp_path / "bad.yaml").write_text("prot: 1\n")
    assert (
        main(["check", "-q", "--config", str(tmp_path / "bad.yaml"), str(tmp_path / "clusters")])
        == 1
    )
    assert "bad.yaml: prot: unknown key" in capsys.readouterr().err
    assert main(["check"]) == 2


def test_config_problems_are_one_line_each_naming_the_field_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "clusters").mkdir()
    config = tmp_path / "karpor.yaml"
    config.write_text(
        "healthProbe: {intervall: 5, failFast: maybe}\n"
        "authentication: {requestHeader: {allowedNames: [a, '']}}\n"
    )
    assert main(["check", "-q", "--config", str(config), str(tmp_path / "clusters")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{config}: healthProbe.intervall: unknown key (did you mean interval?)",
        f"{config}: healthProbe.failFast: must be true or false, not a string",
        f"{config}: authentication.requestHeader.allowedNames[1]: must be a non-empty string, "
        "not a string",
        f"{tmp_path}/clusters: no *.yaml or *.yml files (an empty directory is valid)",
    ]


def test_shipped_examples_are_valid() -> None:
    result = load_directory(str(REPO / "etc" / "clusters"))
    assert [str(p) for p in result.problems] == []
    assert {c.name for c in result.clusters} >= {"example-prod", "example-staging"}
    settings = load_settings(str(REPO / "etc" / "karpor.yaml"))
    assert settings.clusters_dir == str(REPO / "etc" / "clusters")
    assert settings.host == "127.0.0.1"


def test_a_directory_that_cannot_be_listed_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)

    def exhausted(path: str) -> Any:
        raise OSError(errno.EMFILE, "Too many open files", path)

    with monkeypatch.context() as patched:
        patched.setattr(os, "scandir", exhausted)
        status = main(["check", "-q", str(tmp_path)])
    assert status == 1
    assert capsys.readouterr().err.splitlines() == [f"{tmp_path}: cannot list: Too many open files"]


def test_a_symlink_to_a_directory_and_duplicates_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "linked.yaml").symlink_to("sub")
    (tmp_path / "b.yaml").write_text(GOOD)
    (tmp_path / "a.yaml").write_text(GOOD)
    assert main(["check", "-q", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path}/linked.yaml: is a directory, not a cluster file",
        f'{tmp_path}/b.yaml: document 1: metadata.name: duplicate cluster name "good": not '
        f'loaded, "good" comes from {tmp_path}/a.yaml: document 1 (the first definition in '
        "sorted file order, then document order, wins)",
    ]
