"""Cluster files and the clusters directory.

The rules of ``--clusters-dir`` (what ``karpor check`` checks and the
gateway loads):

* Every ``*.yaml`` / ``*.yml`` file directly in the directory is read.  The
  walk is **not recursive**: subdirectories are ignored, which is what a
  Kubernetes ConfigMap or Secret volume needs (its files sit at the top,
  its ``..data`` and timestamped directories below).
* Entries whose name starts with ``.`` are skipped (``..data``, editor
  swap files, ``.hidden.yaml``).  Symbolic links are followed (ConfigMap
  volume files are links through ``..data``); a dangling link, a link to a
  directory and anything else that is not a regular file are reported.
* A file holds one or more YAML documents separated by ``---``; empty
  documents are skipped but still counted, so ``document N`` is the Nth
  ``---`` section as a reader counts them.  Each document is a Karpor
  ``Cluster`` (or a ``List``/``ClusterList`` of them: what ``kubectl get
  clusters -o yaml`` exports; see :mod:`karpor.config.clusters`) or a
  kubeconfig (:mod:`karpor.config.kubeconfig`).
* A bad document is reported and skipped; the rest of the file, and the
  other files, load.  A YAML syntax error is confined to its document.
* Files are read in sorted name order (code-point order).  When two
  definitions share a name, **the first wins**: the first in sorted file
  order, then in document order; every later one is reported once, as
  ``loser: document N: field: duplicate cluster name "x": not loaded, "x"
  comes from winner: document M`` (:class:`DuplicateName`).

What cannot be read is told apart from what is gone (:class:`DirectoryLoader`,
the gateway's reloads): a directory that cannot be listed (moved away,
deleted, unreadable, ``Too many open files``) and a listed cluster file
that cannot be opened or read (or a file it names, for want of file
descriptors or memory) keep their last good definitions (listed in
:attr:`LoadResult.unreadable`: a reload should try again), while a file
that is not listed any more, or that is gone (``ENOENT``) when opened
after the listing, is removed.

Splitting and parsing are sans-IO (:func:`parse_file` takes bytes and a
:class:`~karpor.config.clusters.FileReader`); :func:`load_directory` is the
thin I/O layer on top, and :class:`DirectoryLoader` the gateway's, which on
a reload parses again only the files whose result may have changed.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from karpor.config.clusters import (
    CLUSTER_API_VERSION,
    Definition,
    DocumentContext,
    FileReader,
    Problem,
    parse_cluster,
)
from karpor.config.kubeconfig import parse_kubeconfig
from karpor.config.model import Cluster
from karpor.config.validation import YamlError, describe, load_yaml, quote

#: file name suffixes of cluster files
SUFFIXES = (".yaml", ".yml")

_DOC_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)

#: how a directory is listed (:func:`os.scandir`; tests give a failing one)
Scandir = Callable[[str], AbstractContextManager[Iterator[os.DirEntry[str]]]]
#: how a cluster file is read: its bytes and its modification time (RFC 3339)
ReadFile = Callable[[str], tuple[bytes, str]]

#: errors reading a file a cluster names that say nothing about the file:
#: the process ran out of a resource (a reload keeps the last good parse)
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


@dataclass(frozen=True)
class FileResult:
    """What one file defines: clusters in document order, and its problems."""

    source: str
    definitions: tuple[Definition, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def clusters(self) -> tuple[Cluster, ...]:
        """The clusters, in document order."""
        return tuple(d.cluster for d in self.definitions)


@dataclass(frozen=True)
class LoadResult:
    """What a set of files defines, duplicates resolved (see :func:`combine`)."""

    clusters: tuple[Cluster, ...] = ()
    problems: tuple[Problem, ...] = ()
    #: the files read, in the order read
    sources: tuple[str, ...] = ()
    #: of ``problems``, what could not be read for a reason that may pass (the
    #: directory could not be listed, a listed file could not be read): the
    #: last good definitions stand in, and a reload should try again
    unreadable: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class DuplicateName(Problem):
    """A definition not loaded because an earlier one defines the same name.

    The problem's place (``source``, ``document``, ``field``) is the losing
    definition; ``winner_source`` and ``winner_document`` the one that is
    served (the first in sorted file order, then document order).
    """

    #: the name both define
    cluster: str = ""
    winner_source: str = ""
    winner_document: int = 0

    @classmethod
    def of(cls, loser: Cluster, name_field: str, winner: Cluster) -> DuplicateName:
        """The problem of ``loser`` (named by ``name_field``) losing to ``winner``."""
        problem = cls(
            loser.source,
            loser.document,
            name_field,
            "",
            (),
            loser.name,
            winner.source,
            winner.document,
        )
        return problem.worded(took_over=False)

    def worded(self, *, took_over: bool) -> DuplicateName:
        """This problem with its message; ``took_over``: the losing definition
        served the name until this load (a reload's report says so)."""
        name = quote(self.cluster)
        winner = f"{self.winner_source}: document {self.winner_document}"
        if took_over:
            message = (
                f"duplicate cluster name {name}: not loaded any more, {name} now comes "
                f"from {winner}, which sorts first (the first definition in sorted file "
                "order, then document order, wins)"
            )
        else:
            message = (
                f"duplicate cluster name {name}: not loaded, {name} comes from {winner} "
                "(the first definition in sorted file order, then document order, wins)"
            )
        return dataclasses.replace(self, message=message)


class LocalFiles:
    """The :class:`~karpor.config.clusters.FileReader` of the local file system."""

    def read(self, path: str) -> bytes:
        """The content of ``path``."""
        with open(path, "rb") as f:
            return f.read()

    def executable(self, path: str) -> bool:
        """Whether ``path`` is a regular file this process may execute."""
        return os.path.isfile(path) and os.access(path, os.X_OK)


def split_documents(text: str) -> list[tuple[int, str]]:
    """The documents of a YAML stream as ``(first line, text)`` pairs.

    Splitting at ``---`` lines (column 0, where YAML forbids them inside
    content) lets each document parse on its own: a syntax error in one
    does not hide the documents after it.  Comments, blank lines and
    directives before the first ``---`` belong to the first document.
    """
    starts = [m.start() for m in _DOC_START.finditer(text)]
    if not starts:
        return [(1, text)]
    head = text[: starts[0]]
    bounds = [*starts, len(text)]
    chunks = [
        (text.count("\n", 0, start) + 1, text[start:end])
        for start, end in itertools.pairwise(bounds)
    ]
    if _has_content(head):
        chunks.insert(0, (1, head))
    elif head:
        chunks[0] = (1, head + chunks[0][1])
    return chunks


def _has_content(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%")):
            return True
    return False


def parse_documents(
    text: str,
    source: str,
    files: FileReader,
    *,
    base_dir: str | None = None,
    created: str = "",
) -> FileResult:
    """Parse the text of a cluster file named ``source`` (sans-IO).

    ``base_dir`` (default: the directory of ``source``) resolves the
    relative paths the documents name; ``created`` is stamped on each
    cluster.
    """
    if base_dir is None:
        base_dir = os.path.dirname(source)
    definitions: list[Definition] = []
    problems: list[Problem] = []
    for number, (first_line, chunk) in enumerate(split_documents(text), start=1):
        ctx = DocumentContext(source, number, base_dir, files, created)
        try:
            obj = load_yaml(chunk, first_line)
        except YamlError as exc:
            ctx.fail("yaml", str(exc), None)
        else:
            parse_document(obj, ctx)
        definitions.extend(ctx.definitions)
        problems.extend(ctx.problems)
    return FileResult(source, tuple(definitions), tuple(problems))


def parse_document(obj: Any, ctx: DocumentContext) -> None:
    """Parse one loaded YAML document into ``ctx``, by its ``kind``."""
    if obj is None:
        return
    if not isinstance(obj, Mapping):
        ctx.fail("", f"must be a mapping (a Cluster or a kubeconfig), not {describe(obj)}", None)
        return
    kind = obj.get("kind")
    if kind == "Cluster":
        parse_cluster(obj, "", ctx)
    elif kind == "Config":
        parse_kubeconfig(obj, ctx)
    elif kind in ("List", "ClusterList"):
        items = obj.get("items")
        if not isinstance(items, list):
            ctx.fail("items", f"must be a list, not {describe(items)}", None)
            return
        for i, item in enumerate(items):
            path = f"items[{i}]"
            if not isinstance(item, Mapping) or item.get("kind") != "Cluster":
                ctx.fail(f"{path}.kind", "must be Cluster", None)
            else:
                parse_cluster(item, path, ctx)
    else:
        shown = quote(kind) if isinstance(kind, str) else "missing"
        ctx.fail(
            "kind",
            f"{shown}: expected Cluster ({CLUSTER_API_VERSION}) or Config (a kubeconfig)",
            None,
        )


def parse_file(
    data: bytes,
    source: str,
    files: FileReader,
    *,
    base_dir: str | None = None,
    created: str = "",
) -> FileResult:
    """Parse the bytes of a cluster file: UTF-8 (a BOM is allowed), then documents."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = Problem(source, 0, "", f"not UTF-8 text (byte {exc.start})", None)
        return FileResult(source, (), (problem,))
    return parse_documents(text, source, files, base_dir=base_dir, created=created)


def combine(results: Iterable[FileResult]) -> LoadResult:
    """Merge file results in the given order; the first definition of a name wins.

    Give the files in sorted order (as :func:`load_directory` does): the
    winner of a duplicate is then the first in sorted file order, then in
    document order; every later definition is reported and dropped.
    """
    seen: dict[str, Cluster] = {}
    problems: list[Problem] = []
    sources: list[str] = []
    for result in results:
        sources.append(result.source)
        problems.extend(result.problems)
        for cluster, name_field in result.definitions:
            first = seen.get(cluster.name)
            if first is None:
                seen[cluster.name] = cluster
                continue
            problems.append(DuplicateName.of(cluster, name_field, first))
    return LoadResult(tuple(seen.values()), tuple(problems), tuple(sources))


def is_cluster_file(name: str) -> bool:
    """Whether a directory entry named ``name`` is read as a cluster file."""
    return not name.startswith(".") and name.lower().endswith(SUFFIXES)


def cluster_files(directory: str, scandir: Scandir = os.scandir) -> tuple[list[str], list[Problem]]:
    """The cluster files of ``directory`` in sorted order, and problems listing it."""
    try:
        return list_cluster_files(directory, scandir)
    except OSError as exc:
        return [], [cannot_list(directory, exc)]


def cannot_list(directory: str, exc: OSError) -> Problem:
    """The problem of a directory that cannot be listed (``DIR: cannot list: why``)."""
    return Problem(directory, 0, "", f"cannot list: {exc.strerror or exc}", None)


def list_cluster_files(
    directory: str, scandir: Scandir = os.scandir
) -> tuple[list[str], list[Problem]]:
    """The cluster files of ``directory`` in sorted order, and problems of
    entries that look like cluster files but are not; raises :class:`OSError`
    when the directory cannot be listed."""
    with scandir(directory) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    paths: list[str] = []
    problems: list[Problem] = []
    for entry in entries:
        if not is_cluster_file(entry.name):
            continue
        try:
            if entry.is_file():  # follows symbolic links
                paths.append(entry.path)
            elif not entry.is_symlink():
                if not entry.is_dir():
                    problems.append(Problem(entry.path, 0, "", "not a regular file", None))
                # a subdirectory: not read (the walk is not recursive)
            elif entry.is_dir():
                problems.append(
                    Problem(entry.path, 0, "", "is a directory, not a cluster file", None)
                )
            elif not os.path.exists(entry.path):
                problems.append(Problem(entry.path, 0, "", "dangling symbolic link", None))
            else:
                problems.append(Problem(entry.path, 0, "", "not a regular file", None))
        except OSError as exc:
            problems.append(Problem(entry.path, 0, "", exc.strerror or str(exc), None))
    return paths, problems


def _rfc3339(timestamp: float) -> str:
    when = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def read_file(path: str) -> tuple[bytes, str]:
    """The bytes of ``path`` and its modification time (the clusters'
    ``creationTimestamp``); raises :class:`OSError`."""
    with open(path, "rb") as f:
        created = _rfc3339(os.fstat(f.fileno()).st_mtime)
        return f.read(), created


def cannot_read(path: str, exc: OSError) -> Problem:
    """The problem of a cluster file that cannot be read (``FILE: cannot read: why``)."""
    return Problem(path, 0, "", f"cannot read: {exc.strerror or exc}", None)


def _read_file(path: str) -> tuple[bytes, str] | FileResult:
    """:func:`read_file`, or the result of a file that cannot be read."""
    try:
        return read_file(path)
    except OSError as exc:
        return FileResult(path, (), (cannot_read(path, exc),))


def read_cluster_file(path: str, files: FileReader | None = None) -> FileResult:
    """Read and parse one cluster file; ``created`` is the file's mtime."""
    read = _read_file(path)
    if isinstance(read, FileResult):
        return read
    data, created = read
    return parse_file(data, path, files or LocalFiles(), created=created)


def load_directory(directory: str, files: FileReader | None = None) -> LoadResult:
    """Load every cluster file of ``directory`` (see the module's rules)."""
    return DirectoryLoader(files).load(directory)


class _Exhausted(Exception):
    """A file a cluster names could not be read because this process ran out
    of a resource (``Too many open files``): the parse says nothing."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _Recording:
    """A :class:`~karpor.config.clusters.FileReader` remembering what
    parsing asked of it, to tell later whether the answers still hold."""

    def __init__(self, files: FileReader) -> None:
        self._files = files
        #: content of each file read (``None``: unreadable)
        self.reads: dict[str, bytes | None] = {}
        #: answer of each executable check
        self.checks: dict[str, bool] = {}

    def read(self, path: str) -> bytes:
        """The content of ``path`` (recorded); raises :class:`_Exhausted`
        when the process is out of a resource (the parse is abandoned)."""
        try:
            data = self._files.read(path)
        except OSError as exc:
            if exc.errno in _EXHAUSTED:
                raise _Exhausted(exc) from exc
            self.reads[path] = None
            raise
        self.reads[path] = data
        return data

    def executable(self, path: str) -> bool:
        """Whether ``path`` is executable (recorded)."""
        answer = self._files.executable(path)
        self.checks[path] = answer
        return answer


@dataclass(frozen=True)
class _Parsed:
    """One cluster file as last parsed, with everything the parse depended on."""

    data: bytes
    created: str
    reads: Mapping[str, bytes | None]
    checks: Mapping[str, bool]
    result: FileResult


class DirectoryLoader:
    """Loads a clusters directory again and again (the gateway's reloads),
    parsing again only the files whose result may differ.

    A file's last parse is reused when its bytes and modification second
    (the clusters' ``creationTimestamp``) are the same and every file it
    named (certificates, tokens, exec commands) still reads the same bytes
    and passes the same executable check: a parse depends on nothing else.
    Reading a thousand small files is a few milliseconds; parsing them
    (YAML, validation, certificates) is most of a second.

    What cannot be read now is not taken as gone (see the module's rules):
    when the directory cannot be listed, the result is the last load's
    files again; when a listed file cannot be read (or a file it names, for
    want of file descriptors or memory), its last parse stands in.  Either
    way the problem is in :attr:`LoadResult.unreadable`.  A file that is
    gone (``ENOENT``) between the listing and its reading is removed.
    ``scandir`` and ``read`` replace the directory listing and the reading
    of cluster files (tests simulate failures with them).
    """

    def __init__(
        self,
        files: FileReader | None = None,
        *,
        scandir: Scandir | None = None,
        read: ReadFile | None = None,
    ) -> None:
        self._files = files or LocalFiles()
        self._scandir = scandir or os.scandir
        self._read = read or read_file
        self._parsed: dict[str, _Parsed] = {}

    def load(self, directory: str) -> LoadResult:
        """Load every cluster file of ``directory``, as :func:`load_directory` does."""
        try:
            paths, problems = list_cluster_files(directory, self._scandir)
        except OSError as exc:
            problem = cannot_list(directory, exc)
            kept = combine(entry.result for entry in self._parsed.values())
            return LoadResult(kept.clusters, (problem, *kept.problems), kept.sources, (problem,))
        parsed: dict[str, _Parsed] = {}
        results: list[FileResult] = []
        unreadable: list[Problem] = []
        for path in paths:
            try:
                entry = self._parse(path)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # removed since the listing
                problem = cannot_read(path, exc)
            else:
                parsed[path] = entry
                results.append(entry.result)
                continue
            unreadable.append(problem)
            last = self._parsed.get(path)
            if last is None:
                results.append(FileResult(path, (), (problem,)))
                continue
            parsed[path] = last
            results.append(
                FileResult(path, last.result.definitions, (problem, *last.result.problems))
            )
        self._parsed = parsed
        result = combine(results)
        return LoadResult(
            result.clusters, (*problems, *result.problems), result.sources, tuple(unreadable)
        )

    def _parse(self, path: str) -> _Parsed:
        """The parse of ``path``; raises :class:`OSError` when it cannot be read."""
        data, created = self._read(path)
        last = self._parsed.get(path)
        if last is not None and last.data == data and last.created == created and self._holds(last):
            return last
        recording = _Recording(self._files)
        try:
            result = parse_file(data, path, recording, created=created)
        except _Exhausted as exc:
            raise exc.error from None
        return _Parsed(data, created, recording.reads, recording.checks, result)

    def _holds(self, last: _Parsed) -> bool:
        for path, content in last.reads.items():
            try:
                now: bytes | None = self._files.read(path)
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    raise
                now = None
            if now != content:
                return False
        return all(self._files.executable(path) == ok for path, ok in last.checks.items())


def load_path(path: str, files: FileReader | None = None) -> LoadResult:
    """Load a clusters directory, or a single cluster file."""
    if os.path.isdir(path):
        return load_directory(path, files)
    return combine([read_cluster_file(path, files)])
