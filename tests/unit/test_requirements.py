"""setup.cfg declares the dependencies as they are used.

``install_requires`` lists what ``karpor/`` and ``twisted/plugins/`` import
(the simulator included: ``karpor sim`` and ``--demo`` run it), plus what
:data:`KEPT` names with its reason; a distribution only the tests import is
in the ``test`` extra, and only there (``kubernetes``, which the agent
imports, is a run-time requirement the tests also use).  A module imported
but declared nowhere must come with a declared distribution
(``zope.interface`` with Twisted).
"""

from __future__ import annotations

import configparser
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: declared for run time although nothing imports them yet, and why
KEPT = {
    "treq": "the gateway's HTTP client calls off the request path (OIDC discovery, agents)",
}


def normal(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(line: str) -> tuple[str, frozenset[str], str]:
    """(name, extras, marker) of a requirement line."""
    spec, _, marker = line.partition(";")
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", spec)
    assert match, line
    extras = frozenset(e.strip() for e in (match[2] or "").split(",") if e.strip())
    return normal(match[1]), extras, marker


def declared() -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """(``install_requires``, the ``test`` extra): name -> extras asked for."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")

    def names(value: str) -> dict[str, frozenset[str]]:
        lines = [line.strip() for line in value.splitlines()]
        return dict(parse(line)[:2] for line in lines if line and not line.startswith("#"))

    return (
        names(config["options"]["install_requires"]),
        names(config["options.extras_require"]["test"]),
    )


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(\w[\w.]*)[ \t]+import\b|import[ \t]+([\w., \t]+))", re.M
)


@functools.cache
def imported(*directories: str) -> frozenset[str]:
    """The modules the ``.py`` files under ``directories`` import (absolute
    imports; read line by line: parsing every file would take seconds)."""
    found: set[str] = set()
    for directory in directories:
        for path in (ROOT / directory).rglob("*.py"):
            for module, names in _IMPORT.findall(path.read_text()):
                if module:
                    found.add(module)
                else:
                    found.update(n.split()[0] for n in names.split(",") if n.strip())
    return frozenset(found)


def distributions(modules: frozenset[str], own: set[str]) -> dict[str, set[str]]:
    """Installed distribution -> the modules of ``modules`` it provides
    (the standard library and ``own`` top-level names left out).  Where
    several distributions share a top-level name (``zope``), the one named
    after the module (``zope.interface``) provides it."""
    providers = metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for module in modules:
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in own:
            continue
        dists = providers.get(top)
        assert dists, f"{module!r} is imported, but no installed distribution provides it"
        if len(dists) > 1:
            dists = [d for d in dists if normal(module + ".").startswith(normal(d) + "-")]
            assert len(dists) == 1, f"which distribution provides {module!r}?"
        out.setdefault(normal(dists[0]), set()).add(module)
    return out


def closure(requirements: dict[str, frozenset[str]]) -> set[str]:
    """The distributions ``requirements`` install (with the extras they ask for)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(requirements.items())
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            lines = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in lines:
            dep, dep_extras, marker = parse(line)
            wanted = re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if not wanted or set(wanted) & extras:
                todo.append((dep, dep_extras))
    return {name for name, _ in seen}


def test_install_requires_is_what_the_package_imports() -> None:
    runtime, _ = declared()
    used = distributions(imported("karpor", "twisted"), {"karpor"})
    unused = set(runtime) - set(used) - set(KEPT)
    assert not unused, f"declared for run time, imported by nothing in the package: {unused}"
    undeclared = set(used) - closure(runtime)
    assert not undeclared, f"imported by the package, installed by no declaration: {undeclared}"


def test_what_the_tests_import_is_declared() -> None:
    runtime, test = declared()
    used = distributions(imported("tests"), {"karpor", "support", "bench", "unit"})
    undeclared = set(used) - closure({**runtime, **test})
    assert not undeclared, f"the tests import what nothing declares: {undeclared}"


def test_the_test_extra_repeats_nothing_of_install_requires() -> None:
    # a distribution the package imports at run time (kubernetes: the agent's
    # in-cluster loader) is declared there once, with one lower bound
    runtime, test = declared()
    assert not set(runtime) & set(test)
