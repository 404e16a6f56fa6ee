"""A real OpenID provider for the integration tests, and a browser without one.

``oidc-provider`` (the certified Node.js implementation, pinned in
``tests/support/oidc/package.json``) is installed by :func:`install_provider`
with ``npm install`` into ``tests/support/oidc/node_modules`` (gitignored;
once, reused while the pinned version is there).  No skip: without npm or
the registry the tests fail, saying why.

:func:`start_provider` runs ``tests/support/oidc/provider.mjs`` over TLS
(a test CA of its own, :attr:`ProviderRun.ca_file`) with one public client
(:data:`CLIENT_ID`: PKCE, device flow, refresh tokens) and the users of
:data:`USERS` (their groups in the ``groups`` claim); ID tokens live
``id_token_ttl`` seconds.  :func:`sign_in` plays the user's browser: it
opens a URL and submits the provider's development login and consent forms
with plain HTTP requests (cookies kept), following redirects, also the
last one to ``karpor login``'s loopback listener.

Test modules load the ``oidc_provider`` fixture with
``pytest_plugins = ("support.oidcprovider",)``.  PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import html.parser
import http.cookiejar
import json
import shutil
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from karpor.auth.ca import CertificateAuthority
from support.procs import Process, free_port

HERE = Path(__file__).parent / "oidc"
CLIENT_ID = "karpor-cli"
#: login → groups of the provider's users
USERS = {"alice": ["dev"], "bob": ["ops"]}
#: seconds the provider's ID tokens live in the session fixture
ID_TOKEN_TTL = 6


def _pinned_version() -> str:
    package = json.loads((HERE / "package.json").read_text())
    return str(package["dependencies"]["oidc-provider"])


def install_provider() -> None:
    """``npm install`` the pinned oidc-provider unless it is there already."""
    installed = HERE / "node_modules" / "oidc-provider" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == _pinned_version():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise AssertionError("npm is needed for the OpenID provider tests (Node.js 20+)")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-progress"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"npm install of oidc-provider failed:\n{result.stdout}\n{result.stderr}"
        )


@dataclass
class ProviderRun:
    """A running OpenID provider."""

    process: Process
    issuer: str
    ca_file: Path
    #: the loopback redirect URI registered for the client
    redirect_port: int

    def stop(self) -> None:
        """Stop the provider."""
        self.process.stop()


def start_provider(
    directory: Path,
    id_token_ttl: int = ID_TOKEN_TTL,
    users: Mapping[str, Sequence[str]] = USERS,
) -> ProviderRun:
    """Run the provider on a free loopback port over TLS and wait until it serves."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("node is needed for the OpenID provider tests (Node.js 20+)")
    install_provider()
    ca = CertificateAuthority.create("karpor test OpenID provider CA")
    ca_file = directory / "provider-ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    serving = ca.issue_server("oidc-provider", ["127.0.0.1"])
    serving.write(directory / "provider.crt", directory / "provider.key")
    port = free_port()
    redirect_port = free_port()
    issuer = f"https://127.0.0.1:{port}"
    config = {
        "issuer": issuer,
        "port": port,
        "cert": str(directory / "provider.crt"),
        "key": str(directory / "provider.key"),
        "clientId": CLIENT_ID,
        "redirectUris": [f"http://127.0.0.1:{redirect_port}/callback"],
        "idTokenTtl": id_token_ttl,
        "users": dict(users),
    }
    config_file = directory / "provider.json"
    config_file.write_text(json.dumps(config))
    process = Process([node, str(HERE / "provider.mjs"), str(config_file)], cwd=directory)
    try:
        process.wait_for_line(r"oidc-provider serving ")
    except BaseException:
        process.stop()
        raise
    return ProviderRun(process, issuer, ca_file, redirect_port)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderRun]:
    """The OpenID provider for the session (stopped at the end)."""
    run = start_provider(tmp_path_factory.mktemp("oidc-provider"))
    try:
        yield run
    finally:
        run.stop()


# -- the browser ------------------------------------------------------------------------


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str]


class _Forms(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = _Form(a.get("action", ""), a.get("method", "get").lower(), {})
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def sign_in(url: str, login: str, ca_file: Path, steps: int = 8) -> str:
    """Open ``url`` and submit the provider's forms as ``login`` (any
    password) until a page without a form; that page's text."""
    context = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        urllib.request.HTTPSHandler(context=context),
    )
    request = urllib.request.Request(url)
    for _ in range(steps):
        with opener.open(request, timeout=30) as response:
            page: str = response.read().decode("utf-8", "replace")
            where: str = response.geturl()
        parser = _Forms()
        parser.feed(page)
        if not parser.forms:
            return page
        form = parser.forms[0]
        fields = dict(form.fields)
        if "login" in fields or "password" in fields:
            fields.update(login=login, password="any-password")
        target = urllib.parse.urljoin(where, form.action or where)
        data = urllib.parse.urlencode(fields).encode()
        if form.method == "post":
            request = urllib.request.Request(target, data=data, method="POST")
        else:
            request = urllib.request.Request(f"{target}?{data.decode()}")
    raise AssertionError(f"the sign-in at {url} did not end within {steps} pages")


def browser_script(directory: Path, login: str, ca_file: Path) -> Path:
    """An executable for ``BROWSER``: signs in as ``login`` at the URL it is given."""
    script = directory / f"browser-{login}"
    support = Path(__file__).parent
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path[:0] = [{str(support.parent)!r}, {str(support.parent.parent)!r}]\n"
        "from support.oidcprovider import sign_in\n"
        f"sign_in(sys.argv[1], {login!r}, __import__('pathlib').Path({str(ca_file)!r}))\n"
    )
    script.chmod(0o755)
    return script
