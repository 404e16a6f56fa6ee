"""The fence around Twisted's and pyOpenSSL's private names
(karpor.net.openssl_internals, karpor.net.twisted_internals): on the
installed versions every capability check passes and the fast path is what
a process chooses; no other module of karpor names a private name of
either library; and a check that fails makes the process fall back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import karpor
from karpor.net import implementation, openssl_internals, tlstransport, twisted_internals

FENCES = {
    "pyOpenSSL": Path(openssl_internals.__file__),
    "Twisted": Path(twisted_internals.__file__),
}


def test_the_installed_versions_pass_every_capability_check() -> None:
    assert openssl_internals.check() is None
    assert twisted_internals.check_transport() is None
    assert twisted_internals.check_reactor() is None


def test_the_fast_path_is_chosen_and_active() -> None:
    choice = implementation.choose(implementation.FAST)
    assert choice == implementation.Choice(
        implementation.FAST, openssl_binding=True, gateway_reactor=True
    )
    assert implementation.current() == choice
    # a port or an endpoint binds the direct record calls
    assert tlstransport._fast()
    assert tlstransport._TLSConnection.direct_records
    assert tlstransport._TLSConnection.read_record is openssl_internals.recv
    assert tlstransport._TLSConnection.write_record is openssl_internals.send


def test_twisted_is_everything_public() -> None:
    assert implementation.choose(implementation.TWISTED) == implementation.Choice(
        implementation.TWISTED, openssl_binding=False, gateway_reactor=False
    )


def _private_names() -> set[str]:
    names = {n for group in openssl_internals.PRIVATE_NAMES.values() for n in group}
    for group in twisted_internals.PRIVATE_NAMES.values():
        names.update(group)
    return {n for n in names if n.startswith("_")}


def test_each_private_name_is_used_in_its_fence() -> None:
    sources = {library: path.read_text() for library, path in FENCES.items()}
    for name in openssl_internals.PRIVATE_NAMES["Connection"] + ("_ffi", "_lib"):
        assert name in sources["pyOpenSSL"], name
    for group in twisted_internals.PRIVATE_NAMES.values():
        for name in group:
            assert name in sources["Twisted"], name


def test_no_module_outside_the_fences_touches_private_names() -> None:
    private = _private_names()
    private_modules = re.compile(r"\b(OpenSSL\._util|twisted\.[\w.]*\._\w+)")
    root = Path(karpor.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path in FENCES.values():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in private:
                offenders.append(f"{path.relative_to(root)}:{node.lineno}: .{node.attr}")
            elif isinstance(node, ast.FunctionDef) and node.name in private:
                offenders.append(f"{path.relative_to(root)}:{node.lineno}: def {node.name}")
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                imported = {alias.name for alias in node.names}
                if private_modules.search(module) or (
                    module.startswith("OpenSSL") and imported & private
                ):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: from {module}")
    assert offenders == []


def test_a_failing_check_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twisted_internals, "check_transport", lambda: "tcp.Port changed")
    monkeypatch.setattr(twisted_internals, "check_reactor", lambda: "EPollReactor changed")
    monkeypatch.setattr(implementation._selection, "choice", None)
    warnings: list[str] = []

    def warn(text: str, **fields: object) -> None:
        warnings.append(text.format(**fields))

    monkeypatch.setattr(implementation.log, "warn", warn)
    choice = implementation.select(implementation.FAST)
    assert choice.transport == implementation.TWISTED
    assert choice.openssl_binding and not choice.gateway_reactor
    assert implementation.current() is choice
    assert not tlstransport._fast()
    assert len(warnings) == 1
    assert "tcp.Port changed" in warnings[0] and "EPollReactor changed" in warnings[0]
    assert "Twisted's own TLS" in warnings[0]
