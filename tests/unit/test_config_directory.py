"""Cluster files: documents, YAML errors, the directory walk, duplicates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from karpor.config import directory as directory_module
from karpor.config.directory import (
    DirectoryLoader,
    FileResult,
    LocalFiles,
    cluster_files,
    is_cluster_file,
    load_directory,
    load_path,
    parse_file,
    split_documents,
)


def cluster_doc(
    name: str,
    endpoint: str = "https://10.0.0.1:6443",
    credential: str = "{type: ServiceAccountToken, serviceAccountToken: tok}",
) -> str:
    return (
        "apiVersion: cluster.karpor.io/v1beta1\n"
        "kind: Cluster\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        "  access:\n"
        f"    endpoint: {endpoint}\n"
        "    insecure: true\n"
        f"    credential: {credential}\n"
    )


def parse(text: str, source: str = "d/f.yaml") -> FileResult:
    return parse_file(text.encode(), source, LocalFiles())


def lines(result: FileResult) -> list[str]:
    return [str(p) for p in result.problems]


def test_documents_are_numbered_as_read_and_empty_ones_skipped() -> None:
    text = (
        "# a comment before the first marker\n"
        "---\n" + cluster_doc("one") + "---\n"
        "---\n"
        "# only a comment\n"
        "--- \n" + cluster_doc("two") + "...\n"
    )
    result = parse(text)
    assert lines(result) == []
    assert [(c.name, c.document) for c in result.clusters] == [("one", 1), ("two", 4)]


def test_a_bad_document_is_skipped_and_the_rest_loads() -> None:
    text = (
        cluster_doc("one")
        + "---\n"
        + cluster_doc("two", endpoint="http://x")
        + "---\n"
        + "a: [b\nc: d\n"
        + "---\n"
        + cluster_doc("three")
        + "---\n"
        + "- just a list\n"
        + "---\n"
        + "kind: Deployment\n"
    )
    result = parse(text)
    assert [c.name for c in result.clusters] == ["one", "three"]
    assert lines(result) == [
        "d/f.yaml: document 2: spec.access.endpoint: must be an https:// URL (found http://)",
        "d/f.yaml: document 3: yaml: did not find expected ',' or ']' (line 20)",
        "d/f.yaml: document 5: must be a mapping (a Cluster or a kubeconfig), not a list",
        'd/f.yaml: document 6: kind: "Deployment": expected Cluster '
        "(cluster.karpor.io/v1beta1) or Config (a kubeconfig)",
    ]
    assert [p.names for p in result.problems] == [("two",), None, None, None]


def test_yaml_error_line_numbers_count_from_the_file_start() -> None:
    text = cluster_doc("one") + "---\nkind: Cluster\nmetadata:\n  name: x\n bad: indent\n"
    (problem,) = parse(text).problems
    assert problem.document == 2
    assert problem.field == "yaml"
    assert problem.message.endswith("(line 13)")


def test_not_utf8_and_bom() -> None:
    result = parse_file(b"kind: Cluster\n\xff\xfe", "f.yaml", LocalFiles())
    assert lines(result) == ["f.yaml: not UTF-8 text (byte 14)"]
    assert result.problems[0].names is None
    assert parse_file(
        b"\xef\xbb\xbf" + cluster_doc("bom").encode(), "f.yaml", LocalFiles()
    ).clusters


_scalars = st.one_of(
    st.integers(-1000, 1000),
    st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
)
_docs = st.one_of(
    st.none(),
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        _scalars | st.lists(_scalars, max_size=3),
        max_size=4,
    ),
    st.lists(_scalars, max_size=4),
)


@given(docs=st.lists(_docs, min_size=1, max_size=6), style=st.sampled_from(["block", "flow"]))
def test_splitting_agrees_with_the_yaml_parser(docs: list[object], style: str) -> None:
    text = yaml.safe_dump_all(docs, default_flow_style=(style == "flow"), explicit_start=True)
    expected = list(yaml.safe_load_all(text))
    assert [yaml.safe_load(chunk) for _, chunk in split_documents(text)] == expected


@given(body=st.text(max_size=200))
def test_splitting_never_loses_text(body: str) -> None:
    chunks = split_documents(body)
    assert "".join(chunk for _, chunk in chunks) == body
    assert [line for line, _ in chunks] == sorted(line for line, _ in chunks)


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("a.yaml", True),
        ("b.yml", True),
        ("C.YAML", True),
        (".hidden.yaml", False),
        ("..data", False),
        ("notes.txt", False),
        ("a.yaml.bak", False),
    ],
)
def test_which_entries_are_cluster_files(name: str, read: bool) -> None:
    assert is_cluster_file(name) == read


def test_directory_walk(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(cluster_doc("bee"))
    (tmp_path / "a.yml").write_text(cluster_doc("ay") + "---\n" + cluster_doc("bee"))
    (tmp_path / ".hidden.yaml").write_text(cluster_doc("hidden"))
    (tmp_path / "README.md").write_text("not yaml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.yaml").write_text(cluster_doc("deep"))
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    result = load_directory(str(tmp_path))
    assert [c.name for c in result.clusters] == ["ay", "bee"]
    bee = result.clusters[1]
    # duplicates: the first in sorted file order, then document order, wins
    assert (bee.source, bee.document) == (str(tmp_path / "a.yml"), 2)
    assert [str(p) for p in result.problems] == [
        f"{tmp_path}/gone.yaml: dangling symbolic link",
        f'{tmp_path}/b.yaml: document 1: metadata.name: duplicate cluster name "bee": already '
        f"defined in {tmp_path}/a.yml: document 2 (the first definition wins)",
    ]
    assert result.sources == (str(tmp_path / "a.yml"), str(tmp_path / "b.yaml"))
    assert bee.created.endswith("Z")


def test_configmap_volume_layout(tmp_path: Path) -> None:
    """Files are links through ``..data`` to a hidden timestamped directory."""
    version = tmp_path / "..2024_01_01_00_00_00.1"
    version.mkdir()
    credential = "{type: ServiceAccountToken, tokenFile: token}"
    (version / "prod.yaml").write_text(cluster_doc("prod", credential=credential))
    (version / "token").write_text("t0ken\n")
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "prod.yaml").symlink_to("..data/prod.yaml")
    (tmp_path / "token").symlink_to("..data/token")
    paths, problems = cluster_files(str(tmp_path))
    assert (paths, problems) == ([str(tmp_path / "prod.yaml")], [])
    result = load_directory(str(tmp_path))
    assert [str(p) for p in result.problems] == []
    (prod,) = result.clusters
    # the token path stays the stable link, so a ConfigMap update is seen
    assert prod.credential is not None
    assert getattr(prod.credential, "token_file", None) == str(tmp_path / "token")


def test_missing_directory_and_single_file(tmp_path: Path) -> None:
    result = load_directory(str(tmp_path / "nope"))
    assert [str(p) for p in result.problems] == [
        f"{tmp_path}/nope: cannot list: No such file or directory"
    ]
    one = tmp_path / "one.yaml"
    one.write_text(cluster_doc("one"))
    assert [c.name for c in load_path(str(one)).clusters] == ["one"]
    assert [str(p) for p in load_path(str(tmp_path / "x.yaml")).problems] == [
        f"{tmp_path}/x.yaml: cannot read: No such file or directory"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(cluster_doc("a"))
    f.chmod(0)
    assert [str(p) for p in load_directory(str(tmp_path)).problems] == [
        f"{f}: cannot read: Permission denied"
    ]


# -- DirectoryLoader: reloads parse again only what may have changed ------------------


def _counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    original = directory_module.parse_file

    def counting(data: bytes, source: str, *args: Any, **kwargs: Any) -> FileResult:
        parsed.append(os.path.basename(source))
        return original(data, source, *args, **kwargs)

    monkeypatch.setattr(directory_module, "parse_file", counting)
    return parsed


def _token_doc(name: str, token_file: str) -> str:
    return cluster_doc(name, credential=f"{{type: ServiceAccountToken, tokenFile: {token_file}}}")


def test_a_reload_parses_only_the_files_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = _counting_parses(monkeypatch)
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(cluster_doc(name))
    loader = DirectoryLoader()
    first = loader.load(str(tmp_path))
    assert sorted(parsed) == ["a.yaml", "b.yaml", "c.yaml"]
    assert first == load_directory(str(tmp_path))
    parsed.clear()
    again = loader.load(str(tmp_path))
    assert parsed == []
    assert again == first
    # one file's content changes, one is removed, one added
    (tmp_path / "b.yaml").write_text(cluster_doc("b", endpoint="https://10.0.0.2:6443"))
    (tmp_path / "c.yaml").unlink()
    (tmp_path / "d.yaml").write_text(cluster_doc("d") + "---\n" + cluster_doc("a"))
    third = loader.load(str(tmp_path))
    assert sorted(parsed) == ["b.yaml", "d.yaml"]
    assert third == load_directory(str(tmp_path))
    assert [c.name for c in third.clusters] == ["a", "b", "d"]
    assert any("duplicate cluster name" in str(p) for p in third.problems)


def test_a_changed_named_file_or_modification_second_parses_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = _counting_parses(monkeypatch)
    (tmp_path / "token").write_text("first-token")
    (tmp_path / "t.yaml").write_text(_token_doc("t", str(tmp_path / "token")))
    loader = DirectoryLoader()
    loader.load(str(tmp_path))
    # the named file: same cluster file bytes, other token
    (tmp_path / "token").write_text("other-token")
    parsed.clear()
    after = loader.load(str(tmp_path))
    assert parsed == ["t.yaml"]
    assert after == load_directory(str(tmp_path))
    # the named file disappears: parsed again, now a problem
    (tmp_path / "token").unlink()
    parsed.clear()
    gone = loader.load(str(tmp_path))
    assert parsed == ["t.yaml"] and gone.clusters == () and gone.problems
    # same bytes, another modification second: creationTimestamp follows
    (tmp_path / "token").write_text("other-token")
    loader.load(str(tmp_path))
    stamp = (tmp_path / "t.yaml").stat().st_mtime - 3600
    os.utime(tmp_path / "t.yaml", (stamp, stamp))
    parsed.clear()
    touched = loader.load(str(tmp_path))
    assert parsed == ["t.yaml"]
    assert touched.clusters[0].created != after.clusters[0].created


def test_an_exec_command_losing_its_mode_parses_again(tmp_path: Path) -> None:
    helper = tmp_path / "helper"
    helper.write_text("#!/bin/sh\n")
    helper.chmod(0o755)
    doc = (
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'https://10.0.0.1:6443'}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: u}}]\n"
        f"users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, "
        f"command: {helper}, interactiveMode: Never}}}}}}]\n"
    )
    (tmp_path / "k.yaml").write_text(doc)
    loader = DirectoryLoader()
    assert [c.name for c in loader.load(str(tmp_path)).clusters] == ["x"]
    helper.chmod(0o644)
    if os.access(helper, os.X_OK):
        pytest.skip("root executes anything")
    result = loader.load(str(tmp_path))
    assert result == load_directory(str(tmp_path))
    assert result.clusters == () and "not an executable file" in " ".join(map(str, result.problems))
