"""What an ``exec``, ``attach`` or ``portforward`` request is about, and how
its session ended (sans-IO, for the session audit line and the recorder).

:func:`session_request` reads the request target
(``/api/v1/namespaces/NS/pods/POD/exec?container=c&command=sh&tty=true``):
namespace, pod, subresource, container, command, ``tty``, ``stdin`` and
the forwarded ``ports``.  :func:`is_copy_command` recognises ``kubectl
cp``: an exec of ``tar`` in exactly the shapes kubectl uses (``tar cf -
PATH...`` from a pod; ``tar [--no-same-permissions --no-same-owner] -xmf -
[-C DIR]`` to a pod), never a ``tar`` given any other option (``tar
--to-command=sh`` or ``--checkpoint-action=exec=`` run commands and are
recorded like any exec).  :func:`exit_code` reads the kubelet's error
channel: a v4/v5 ``Status`` (``Success``: 0; ``NonZeroExitCode`` with an
``ExitCode`` cause: that code), older protocols' plain message (a
failure without a code).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

#: the subresources that open a session
SESSION_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
#: the subresources whose sessions are terminal sessions (recordable)
TERMINAL_SUBRESOURCES = frozenset({"exec", "attach"})
#: longest command (all arguments joined) kept for the audit log
MAX_COMMAND = 4096


@dataclass(frozen=True)
class SessionRequest:
    """The pod and options an ``exec``/``attach``/``portforward`` request names."""

    namespace: str
    pod: str
    #: ``exec``, ``attach`` or ``portforward``
    subresource: str
    container: str = ""
    command: tuple[str, ...] = ()
    tty: bool = False
    stdin: bool = False
    ports: tuple[str, ...] = ()

    @property
    def terminal(self) -> bool:
        """Whether the session is an exec or attach (not a port-forward)."""
        return self.subresource in TERMINAL_SUBRESOURCES


def _flag(values: Sequence[str] | None) -> bool:
    if not values:
        return False
    first = values[0]
    return not (first == "0" or first.lower() == "false")


def session_request(target: bytes) -> SessionRequest | None:
    """The :class:`SessionRequest` of a request target (path and query), or
    ``None`` when it is no pod's exec, attach or portforward."""
    path, _, query = target.decode("latin-1").partition("?")
    parts = [unquote(p) for p in path.strip("/").split("/")]
    # api/v1/namespaces/NS/pods/POD/SUB
    if len(parts) != 7 or parts[:2] != ["api", "v1"] or parts[2] != "namespaces":
        return None
    if parts[4] != "pods" or parts[6] not in SESSION_SUBRESOURCES:
        return None
    options = parse_qs(query, keep_blank_values=True)
    return SessionRequest(
        namespace=parts[3],
        pod=parts[5],
        subresource=parts[6],
        container=options.get("container", [""])[0],
        command=tuple(options.get("command", ())),
        tty=_flag(options.get("tty")),
        stdin=_flag(options.get("stdin")),
        ports=tuple(options.get("ports", ())),
    )


def _plain_path(arg: str) -> bool:
    return bool(arg) and not arg.startswith("-")


def is_copy_command(command: Sequence[str]) -> bool:
    """Whether ``command`` is ``kubectl cp``'s ``tar`` (see the module
    docstring): its stream is a tar archive, not a terminal's."""
    if not command or posixpath.basename(command[0]) != "tar":
        return False
    args = list(command[1:])
    if args[:2] == ["cf", "-"]:  # from a pod: tar cf - PATH...
        return len(args) > 2 and all(_plain_path(a) for a in args[2:])
    if args[:2] == ["--no-same-permissions", "--no-same-owner"]:
        args = args[2:]
    if args[:2] in (["-xmf", "-"], ["xmf", "-"], ["xf", "-"]):  # to a pod
        rest = args[2:]
        return not rest or (len(rest) == 2 and rest[0] == "-C" and bool(rest[1]))
    return False


def bounded_command(command: Sequence[str]) -> list[str]:
    """The command for the audit log: its arguments while they total at most
    :data:`MAX_COMMAND` characters, then a marker saying how many more there were."""
    out: list[str] = []
    total = 0
    for i, arg in enumerate(command):
        if total + len(arg) > MAX_COMMAND:
            keep = MAX_COMMAND - total
            rest = sum(len(a) for a in command[i:]) - keep
            out.append(f"{arg[:keep]}...[truncated {rest} characters]")
            break
        out.append(arg)
        total += len(arg)
    return out


@dataclass(frozen=True)
class SessionOutcome:
    """How a session ended, read from its error channel."""

    #: the command's exit code (``None``: unknown, or a failure without one)
    exit_code: int | None
    #: the failure's message ("" on success or when nothing was said)
    message: str = ""


#: the outcome of a session whose error channel said nothing
NO_OUTCOME = SessionOutcome(None)


def exit_code(payload: bytes, status_protocol: bool) -> SessionOutcome:
    """The outcome an error channel's ``payload`` says (``status_protocol``:
    a v4/v5 ``Status``; else an older protocol's plain message)."""
    if not payload:
        return SessionOutcome(0) if not status_protocol else NO_OUTCOME
    if not status_protocol:
        return SessionOutcome(None, payload.decode("utf-8", "replace")[:1024])
    try:
        status = json.loads(payload)
    except ValueError:
        return SessionOutcome(None, payload.decode("utf-8", "replace")[:1024])
    if not isinstance(status, dict):
        return NO_OUTCOME
    if status.get("status") == "Success":
        return SessionOutcome(0)
    message = str(status.get("message", ""))[:1024]
    if status.get("reason") == "NonZeroExitCode":
        details = status.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        for cause in causes if isinstance(causes, list) else ():
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    return SessionOutcome(int(str(cause.get("message"))), message)
                except ValueError:
                    break
    return SessionOutcome(None, message)


__all__ = [
    "MAX_COMMAND",
    "NO_OUTCOME",
    "SESSION_SUBRESOURCES",
    "TERMINAL_SUBRESOURCES",
    "SessionOutcome",
    "SessionRequest",
    "bounded_command",
    "exit_code",
    "is_copy_command",
    "session_request",
]
