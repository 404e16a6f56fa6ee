"""``karpor login``: sign in at an OpenID provider and print an ExecCredential.

::

    karpor login --issuer URL --client-id ID [--listen-address 127.0.0.1:8000]
                 [--device-code] [--extra-scope S]... [--certificate-authority FILE]
                 [--cache-dir DIR]

The exec credential plugin of the kubeconfigs ``karpor kubeconfig
--oidc-issuer`` writes (kubectl runs it whenever it needs a token).  It
prints, on standard output, an ``ExecCredential``
(``client.authentication.k8s.io/v1``) whose ``status.token`` is the
provider's ID token and ``expirationTimestamp`` its expiry; every message
goes to standard error.

The tokens are cached in ``--cache-dir`` (default ``~/.kube/cache/karpor``,
mode 0700), one file (mode 0600) per issuer and client id.  A cached ID
token valid for a few more seconds is printed as is; an expired one is
refreshed with the refresh token, silently; without one (or when the
refresh is refused) the user signs in:

* by default, the authorization-code flow with PKCE: a listener on the
  loopback ``--listen-address`` receives the redirect
  (``http://HOST:PORT/callback``, the URI to register at the provider); the
  browser is opened at the provider's sign-in page (``webbrowser``: the
  ``BROWSER`` variable chooses it) and the URL is printed in case it
  cannot be;
* with ``--device-code``, the device-code flow (RFC 8628) for machines
  without a browser: the URL and code to enter elsewhere are printed, and
  the token endpoint is polled until the sign-in completes.

One login at a time per cache directory (a lock file): kubectl may run the
plugin from several processes, and a refresh token may be used only once.
The network calls are blocking (``urllib``), bounded in time
(:data:`HTTP_TIMEOUT` per call, :data:`SIGN_IN_TIMEOUT` for the whole
sign-in) and in size (:data:`MAX_RESPONSE_BYTES` per answer).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.server
import json
import os
import secrets
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

from karpor.auth.oidclogin import (
    REFRESH,
    USE,
    CachedTokens,
    LoginError,
    Provider,
    TokenError,
    authorization_url,
    cache_file_name,
    check_nonce,
    code_request,
    device_request,
    discovery_url,
    exec_credential,
    next_step,
    parse_callback,
    parse_device_authorization,
    parse_discovery,
    parse_listen_address,
    parse_token_response,
    pkce_verifier,
    poll_decision,
    redirect_uri,
    refresh_request,
    scopes,
)

#: seconds one request to the provider may take
HTTP_TIMEOUT = 30.0
#: seconds a sign-in (browser or device) may take
SIGN_IN_TIMEOUT = 300.0
#: the largest answer read from the provider
MAX_RESPONSE_BYTES = 1 << 20
#: where the tokens are cached by default
DEFAULT_CACHE_DIR = "~/.kube/cache/karpor"
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:8000"


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``login`` subcommand."""
    parser = subparsers.add_parser(
        "login",
        help="sign in at an OpenID provider; print an ExecCredential (a kubectl exec plugin)",
        description=(
            "Sign in at an OpenID provider (authorization code with PKCE, or the "
            "device-code flow), cache and refresh the tokens, and print an ExecCredential "
            "holding the ID token for kubectl."
        ),
    )
    parser.add_argument("--issuer", required=True, help="the provider's issuer URL")
    parser.add_argument("--client-id", required=True, help="the client id registered there")
    parser.add_argument(
        "--listen-address",
        default=DEFAULT_LISTEN_ADDRESS,
        help="the loopback HOST:PORT receiving the redirect "
        f"(default {DEFAULT_LISTEN_ADDRESS}; register http://HOST:PORT/callback)",
    )
    parser.add_argument(
        "--device-code",
        action="store_true",
        help="sign in with the device-code flow (no browser on this machine)",
    )
    parser.add_argument(
        "--extra-scope",
        action="append",
        default=[],
        dest="extra_scopes",
        metavar="SCOPE",
        help="a scope to ask for besides openid and offline_access (e.g. groups, email)",
    )
    parser.add_argument(
        "--certificate-authority",
        type=Path,
        help="a PEM file of the CA of the provider's TLS (default: the system's)",
    )
    parser.add_argument(
        "--cache-dir",
        default=DEFAULT_CACHE_DIR,
        help=f"where the tokens are cached (default {DEFAULT_CACHE_DIR})",
    )
    parser.set_defaults(handler=run)


class _Http:
    """Blocking JSON calls to the provider."""

    def __init__(self, cafile: Path | None) -> None:
        self._tls = ssl.create_default_context(cafile=str(cafile) if cafile else None)

    def _read(self, request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
        url = request.full_url
        if urlsplit(url).scheme != "https":
            raise LoginError(f"{url}: the provider must be reached over https")
        try:
            # https only (checked above): no file: or other scheme
            response = urllib.request.urlopen(  # noqa: S310
                request, timeout=HTTP_TIMEOUT, context=self._tls
            )
        except urllib.error.HTTPError as exc:
            response = exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LoginError(f"{url}: cannot reach the provider: {reason}") from None
        with response:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
            status = response.status if response.status is not None else 0
        if len(raw) > MAX_RESPONSE_BYTES:
            raise LoginError(f"{url}: the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise LoginError(f"{url}: answered HTTP {status} without a JSON object")
        return status, document

    def get(self, url: str) -> dict[str, Any]:
        status, document = self._read(
            urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
        )
        if status != 200:
            raise LoginError(f"{url}: answered HTTP {status}")
        return document

    def post(self, url: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        return self._read(
            urllib.request.Request(  # noqa: S310
                url,
                data=urlencode(form).encode(),
                headers={
                    "Accept": "application/json",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                method="POST",
            )
        )


class _Callback(http.server.BaseHTTPRequestHandler):
    """The loopback listener's handler: takes the redirect's code."""

    server: _CallbackServer

    def do_GET(self) -> None:
        server = self.server
        try:
            code = parse_callback(self.path, server.state)
        except LoginError as exc:
            server.finish(None, exc)
            self._answer(400, "Sign-in failed. Details are in the terminal.")
            return
        if code is None:
            self._answer(404, "Not found.")
            return
        server.finish(code, None)
        self._answer(200, "Signed in to karpor. You may close this window.")

    def _answer(self, status: int, text: str) -> None:
        body = f"<!doctype html><title>karpor login</title><p>{text}</p>\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the query holds the code."""


class _CallbackServer(http.server.HTTPServer):
    def __init__(self, host: str, port: int, state: str) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Callback)
        self.timeout = 5.0
        self.state = state
        self.code: str | None = None
        self.error: LoginError | None = None
        self.done = threading.Event()

    def finish(self, code: str | None, error: LoginError | None) -> None:
        if not self.done.is_set():
            self.code, self.error = code, error
            self.done.set()


def _browser_flow(
    http: _Http, provider: Provider, args: argparse.Namespace, scope: tuple[str, ...], err: TextIO
) -> CachedTokens:
    host, port = parse_listen_address(args.listen_address)
    state = secrets.token_urlsafe(24)
    nonce = secrets.token_urlsafe(24)
    verifier = pkce_verifier(secrets.token_bytes(32))
    try:
        server = _CallbackServer(host, port, state)
    except OSError as exc:
        raise LoginError(
            f"cannot listen on {args.listen_address} for the sign-in redirect: "
            f"{exc.strerror or exc} (choose another with --listen-address)"
        ) from None
    with server:
        redirect = redirect_uri(host, server.server_address[1])
        url = authorization_url(provider, args.client_id, redirect, scope, state, nonce, verifier)
        thread = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
        thread.start()
        try:
            print(
                f"karpor login: sign in at {provider.issuer} in your browser; if it does not "
                f"open, visit:\n{url}",
                file=err,
                flush=True,
            )
            with contextlib.suppress(webbrowser.Error):
                webbrowser.open(url)
            if not server.done.wait(SIGN_IN_TIMEOUT):
                raise LoginError(f"no sign-in within {SIGN_IN_TIMEOUT:g} s")
        finally:
            server.shutdown()
            thread.join(5)
    if server.error is not None:
        raise server.error
    assert server.code is not None
    status, document = http.post(
        provider.token_endpoint, code_request(args.client_id, server.code, redirect, verifier)
    )
    tokens = parse_token_response(status, document)
    check_nonce(tokens.id_token, nonce)
    return tokens


def _device_flow(
    http: _Http, provider: Provider, args: argparse.Namespace, scope: tuple[str, ...], err: TextIO
) -> CachedTokens:
    if provider.device_authorization_endpoint is None:
        raise LoginError("the provider offers no device-code flow (drop --device-code)")
    status, document = http.post(
        provider.device_authorization_endpoint,
        {"client_id": args.client_id, "scope": " ".join(scope)},
    )
    if status != 200:
        error = document.get("error")
        raise TokenError(error if isinstance(error, str) else f"HTTP {status}")
    device = parse_device_authorization(document)
    if device.verification_uri_complete:
        where = f"visit {device.verification_uri_complete}\n(or {device.verification_uri} "
        where += f"and enter the code {device.user_code})"
    else:
        where = f"visit {device.verification_uri} and enter the code {device.user_code}"
    print(f"karpor login: to sign in at {provider.issuer}, {where}", file=err, flush=True)
    deadline = time.monotonic() + min(device.expires_in, SIGN_IN_TIMEOUT)
    interval = device.interval
    while True:
        time.sleep(interval)
        if time.monotonic() > deadline:
            raise LoginError("the sign-in did not complete in time")
        status, document = http.post(
            provider.token_endpoint, device_request(args.client_id, device.device_code)
        )
        try:
            return parse_token_response(status, document)
        except TokenError as exc:
            interval = poll_decision(exc.error, interval)


def _write_cache(path: Path, tokens: CachedTokens, issuer: str, client_id: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(tokens.to_json(issuer, client_id))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def _read_cache(path: Path) -> CachedTokens | None:
    try:
        return CachedTokens.from_json(path.read_bytes()[:MAX_RESPONSE_BYTES])
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def login(args: argparse.Namespace, err: TextIO) -> CachedTokens:
    """The tokens to hand out: cached, refreshed, or from a new sign-in."""
    cache_dir = Path(os.path.expanduser(args.cache_dir))
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = cache_dir / cache_file_name(args.issuer, args.client_id)
    http = _Http(args.certificate_authority)
    with _locked(cache_dir):
        cached = _read_cache(path)
        step = next_step(cached, time.time())
        if step == USE:
            assert cached is not None
            return cached
        provider = parse_discovery(args.issuer, http.get(discovery_url(args.issuer)))
        if step == REFRESH:
            assert cached is not None and cached.refresh_token is not None
            status, document = http.post(
                provider.token_endpoint, refresh_request(args.client_id, cached.refresh_token)
            )
            try:
                tokens = parse_token_response(status, document, cached.refresh_token)
            except TokenError as exc:
                print(f"karpor login: the refresh failed ({exc}); sign in again", file=err)
            else:
                _write_cache(path, tokens, args.issuer, args.client_id)
                return tokens
        scope = scopes(args.extra_scopes)
        flow = _device_flow if args.device_code else _browser_flow
        tokens = flow(http, provider, args, scope, err)
        _write_cache(path, tokens, args.issuer, args.client_id)
        print(f"karpor login: signed in at {args.issuer}", file=err)
        return tokens


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``karpor login``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        tokens = login(args, err)
        credential = exec_credential(tokens.id_token)
    except (LoginError, OSError) as exc:
        print(f"karpor login: error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("karpor login: interrupted", file=err)
        return 130
    out.write(json.dumps(credential) + "\n")
    out.flush()
    return 0
