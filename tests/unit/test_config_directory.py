"""Cluster files: documents, YAML errors, the directory walk, duplicates."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from karpor.config import directory as directory_module
from karpor.config.directory import (
    DirectoryLoader,
    DuplicateName,
    FileResult,
    LocalFiles,
    cluster_files,
    is_cluster_file,
    load_directory,
    load_path,
    parse_file,
    read_file,
    split_documents,
)
from karpor.config.registry import Registry


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
    (tmp_path / "linked.yaml").symlink_to(tmp_path / "sub")
    result = load_directory(str(tmp_path))
    assert [c.name for c in result.clusters] == ["ay", "bee"]
    bee = result.clusters[1]
    # duplicates: the first in sorted file order, then document order, wins
    assert (bee.source, bee.document) == (str(tmp_path / "a.yml"), 2)
    assert [str(p) for p in result.problems] == [
        f"{tmp_path}/gone.yaml: dangling symbolic link",
        f"{tmp_path}/linked.yaml: is a directory, not a cluster file",
        f'{tmp_path}/b.yaml: document 1: metadata.name: duplicate cluster name "bee": not '
        f'loaded, "bee" comes from {tmp_path}/a.yml: document 2 (the first definition in '
        "sorted file order, then document order, wins)",
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


# -- what cannot be read is not gone (issue 14, item 6) ----------------------------


class _Flaky:
    """A listing or a reading that fails with ``errno`` while ``failing``
    (for the paths in ``paths``, every path when empty)."""

    def __init__(self, real: Any, code: int, paths: tuple[str, ...] = ()) -> None:
        self.real = real
        self.code = code
        self.paths = paths
        self.failing = False

    def __call__(self, path: str) -> Any:
        if self.failing and (not self.paths or os.path.basename(path) in self.paths):
            raise OSError(self.code, os.strerror(self.code), path)
        return self.real(path)


def _names(result: Any) -> dict[str, str]:
    """name -> file of a load result's or a snapshot's clusters."""
    clusters = result.clusters
    found = clusters.values() if isinstance(clusters, Mapping) else clusters
    return {c.name: os.path.basename(c.source) for c in found}


@pytest.mark.parametrize(
    "code", [errno.EMFILE, errno.ENFILE, errno.ENOENT, errno.EACCES], ids=errno.errorcode.get
)
def test_a_directory_that_cannot_be_listed_keeps_the_last_good_set(
    tmp_path: Path, code: int
) -> None:
    (tmp_path / "a.yaml").write_text(cluster_doc("a") + "---\nkind: Nonsense\n")
    (tmp_path / "b.yaml").write_text(cluster_doc("b") + "---\n" + cluster_doc("a"))
    scandir = _Flaky(os.scandir, code)
    loader = DirectoryLoader(scandir=scandir)
    registry = Registry()
    good = loader.load(str(tmp_path))
    registry.load(good)
    assert good.unreadable == ()
    scandir.failing = True
    failed = loader.load(str(tmp_path))
    listing = f"{tmp_path}: cannot list: {os.strerror(code)}"
    assert [str(p) for p in failed.unreadable] == [listing]
    assert [str(p) for p in failed.problems] == [listing, *(str(p) for p in good.problems)]
    assert failed.clusters == good.clusters
    snapshot = registry.load(failed)
    assert _names(snapshot) == {"a": "a.yaml", "b": "b.yaml"}
    assert snapshot.stale == frozenset()
    # the directory is back, changed meanwhile: loaded as usual
    scandir.failing = False
    (tmp_path / "b.yaml").unlink()
    back = loader.load(str(tmp_path))
    assert back.unreadable == ()
    assert _names(registry.load(back)) == {"a": "a.yaml"}


def test_the_first_load_of_a_directory_that_cannot_be_listed_is_empty(tmp_path: Path) -> None:
    scandir = _Flaky(os.scandir, errno.EMFILE)
    scandir.failing = True
    result = DirectoryLoader(scandir=scandir).load(str(tmp_path))
    assert result.clusters == ()
    assert [str(p) for p in result.problems] == [f"{tmp_path}: cannot list: Too many open files"]
    assert result.unreadable == result.problems


@pytest.mark.parametrize(
    "code", [errno.EMFILE, errno.ENFILE, errno.EACCES, errno.EIO], ids=errno.errorcode.get
)
def test_a_file_that_cannot_be_read_keeps_its_last_parse(tmp_path: Path, code: int) -> None:
    # a.yaml sorts first: it wins "shared" while it cannot be read, too
    (tmp_path / "a.yaml").write_text(cluster_doc("shared") + "---\n" + cluster_doc("a"))
    (tmp_path / "b.yaml").write_text(cluster_doc("shared", endpoint="https://10.0.0.2:6443"))
    read = _Flaky(read_file, code, ("a.yaml",))
    loader = DirectoryLoader(read=read)
    registry = Registry()
    good = loader.load(str(tmp_path))
    assert _names(registry.load(good)) == {"shared": "a.yaml", "a": "a.yaml"}
    read.failing = True
    failed = loader.load(str(tmp_path))
    unreadable = f"{tmp_path}/a.yaml: cannot read: {os.strerror(code)}"
    assert [str(p) for p in failed.unreadable] == [unreadable]
    assert str(failed.problems[0]) == unreadable
    assert failed.clusters == good.clusters
    snapshot = registry.load(failed)
    assert _names(snapshot) == {"shared": "a.yaml", "a": "a.yaml"}
    # the loser is still named, once, and the winner with it
    (dup,) = [p for p in snapshot.errors if isinstance(p, DuplicateName)]
    assert (os.path.basename(dup.source), dup.winner_source) == ("b.yaml", f"{tmp_path}/a.yaml")
    read.failing = False
    assert loader.load(str(tmp_path)) == good


def test_a_file_gone_after_the_listing_is_removed(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(cluster_doc("a"))
    (tmp_path / "b.yaml").write_text(cluster_doc("b"))
    read = _Flaky(read_file, errno.ENOENT, ("a.yaml",))
    loader = DirectoryLoader(read=read)
    registry = Registry()
    registry.load(loader.load(str(tmp_path)))
    read.failing = True
    gone = loader.load(str(tmp_path))
    assert (gone.problems, gone.unreadable) == ((), ())
    assert _names(registry.load(gone)) == {"b": "b.yaml"}


class _ExhaustedFiles(LocalFiles):
    """The local files, but out of file descriptors while ``failing``."""

    failing = False

    def read(self, path: str) -> bytes:
        if self.failing:
            raise OSError(errno.EMFILE, "Too many open files", path)
        return super().read(path)


def test_a_named_file_unreadable_for_want_of_descriptors_keeps_the_last_parse(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("t0ken")
    (tmp_path / "t.yaml").write_text(_token_doc("t", str(tmp_path / "token")))
    files = _ExhaustedFiles()
    loader = DirectoryLoader(files)
    good = loader.load(str(tmp_path))
    assert [c.name for c in good.clusters] == ["t"]
    files.failing = True
    (tmp_path / "t.yaml").write_text(_token_doc("t", str(tmp_path / "token")) + "\n")
    failed = loader.load(str(tmp_path))
    assert failed.clusters == good.clusters
    assert [str(p) for p in failed.unreadable] == [
        f"{tmp_path}/t.yaml: cannot read: Too many open files"
    ]
    files.failing = False
    again = loader.load(str(tmp_path))
    assert (again.problems, [c.name for c in again.clusters]) == ((), ["t"])


def test_a_symlink_to_a_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "prod.yaml").symlink_to("real")
    paths, problems = cluster_files(str(tmp_path))
    assert paths == []
    assert [str(p) for p in problems] == [
        f"{tmp_path}/prod.yaml: is a directory, not a cluster file"
    ]


# -- duplicate names: the first in sorted order wins, each loser named once ----------

_FILE_NAMES = st.sampled_from(["a.yaml", "B.yaml", "b.yml", "c.yaml", "c.yaml.yaml", "z.yaml"])
_FILES = st.dictionaries(_FILE_NAMES, st.lists(st.sampled_from(["x", "y", "z"]), max_size=3))


class _Entry:
    """A directory entry of :class:`_Memory`: a regular file."""

    def __init__(self, directory: str, name: str) -> None:
        self.name = name
        self.path = f"{directory}/{name}"

    def is_file(self) -> bool:
        return True

    def is_symlink(self) -> bool:
        return False

    def is_dir(self) -> bool:
        return False


class _Memory:
    """A clusters directory in memory: its listing (in an arbitrary order) and reading."""

    def __init__(self, files: dict[str, list[str]]) -> None:
        self.files = files

    @contextlib.contextmanager
    def scandir(self, directory: str) -> Iterator[Iterator[Any]]:
        names = sorted(self.files, key=lambda n: hash(n) % 7)
        yield iter([_Entry(directory, n) for n in names])

    def read(self, path: str) -> tuple[bytes, str]:
        docs = self.files[os.path.basename(path)]
        return "---\n".join(cluster_doc(n) for n in docs).encode(), "2024-01-01T00:00:00Z"


def _definitions(files: dict[str, list[str]]) -> list[tuple[str, int, str]]:
    """Every definition as (file, document, name), in sorted file then document order."""
    return [(f, i, n) for f in sorted(files) for i, n in enumerate(files[f], start=1)]


@given(files=_FILES)
def test_the_first_definition_in_sorted_order_wins_and_each_loser_is_named_once(
    files: dict[str, list[str]],
) -> None:
    memory = _Memory(files)
    result = DirectoryLoader(scandir=memory.scandir, read=memory.read).load("d")
    winners: dict[str, tuple[str, int]] = {}
    losers: list[tuple[str, int, str]] = []
    for f, i, n in _definitions(files):
        if n in winners:
            losers.append((f, i, n))
        else:
            winners.setdefault(n, (f, i))
    assert {c.name: (os.path.basename(c.source), c.document) for c in result.clusters} == winners
    duplicates = [p for p in result.problems if isinstance(p, DuplicateName)]
    assert len(duplicates) == len(result.problems)
    assert sorted(
        (os.path.basename(p.source), p.document, p.cluster) for p in duplicates
    ) == sorted(losers)
    for p in duplicates:
        f, i = winners[p.cluster]
        assert (p.winner_source, p.winner_document) == (f"d/{f}", i)
        assert f'"{p.cluster}": not loaded, "{p.cluster}" comes from d/{f}: document {i} ' in str(p)


@given(before=_FILES, added=_FILES)
def test_a_reload_names_the_definition_that_lost_a_live_cluster(
    before: dict[str, list[str]], added: dict[str, list[str]]
) -> None:
    """Files added (or replaced) on a reload may take names over: the loser that
    served a name is told it serves no more, and which definition does now."""
    memory = _Memory(dict(before))
    loader = DirectoryLoader(scandir=memory.scandir, read=memory.read)
    registry = Registry()
    old = registry.load(loader.load("d")).clusters
    memory.files.update(added)
    snapshot = registry.load(loader.load("d"))
    for p in snapshot.errors:
        assert isinstance(p, DuplicateName)
        served = old.get(p.cluster)
        took_over = served is not None and (served.source, served.document) == (
            p.source,
            p.document,
        )
        winner = snapshot.clusters[p.cluster]
        assert (p.winner_source, p.winner_document) == (winner.source, winner.document)
        assert (winner.source, winner.document) < (p.source, p.document)
        if took_over:
            assert str(p) == (
                f'{p.source}: document {p.document}: metadata.name: duplicate cluster name "'
                f'{p.cluster}": not loaded any more, "{p.cluster}" now comes from '
                f"{winner.source}: document {winner.document}, which sorts first (the first "
                "definition in sorted file order, then document order, wins)"
            )
        else:
            assert "not loaded, " in str(p) and "any more" not in str(p)


def test_a_file_added_that_sorts_first_takes_a_live_cluster_over(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(cluster_doc("x", endpoint="https://10.0.0.2:6443"))
    loader = DirectoryLoader()
    registry = Registry()
    registry.load(loader.load(str(tmp_path)))
    (tmp_path / "a.yaml").write_text(cluster_doc("x"))
    snapshot = registry.load(loader.load(str(tmp_path)))
    assert snapshot.clusters["x"].source == str(tmp_path / "a.yaml")
    assert [str(p) for p in snapshot.errors] == [
        f'{tmp_path}/b.yaml: document 1: metadata.name: duplicate cluster name "x": not loaded '
        f'any more, "x" now comes from {tmp_path}/a.yaml: document 1, which sorts first (the '
        "first definition in sorted file order, then document order, wins)"
    ]
    # the next reload: b.yaml never served it since
    again = registry.load(loader.load(str(tmp_path)))
    assert [str(p) for p in again.errors] == [
        f'{tmp_path}/b.yaml: document 1: metadata.name: duplicate cluster name "x": not loaded, '
        f'"x" comes from {tmp_path}/a.yaml: document 1 (the first definition in sorted file '
        "order, then document order, wins)"
    ]
