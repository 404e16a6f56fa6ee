"""``/version``: the gateway's ``version.Info``.

kubectl reads ``major``, ``minor`` and ``gitVersion`` (``kubectl version``
prints the latter and warns when the server's minor version is more than one
away from its own).  The gateway itself serves no Kubernetes version; it
reports the Kubernetes minor version whose API conventions it follows (the
one the simulator serves, :data:`KUBERNETES_MINOR`), with karpor's own
version as the semver pre-release part: ``v1.31.0-karpor.0.1.0``.  The
middle of the supported kubectl range (1.27-1.33) keeps skew warnings away
from most clients.
"""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

from karpor import __version__

#: the Kubernetes minor version whose API conventions the gateway follows
KUBERNETES_MINOR = 31


_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


def _go_arch(machine: str) -> str:
    """Go's name (``GOARCH``) for a machine type: clients expect ``linux/amd64``."""
    machine = machine.lower()
    return _GO_ARCH.get(machine, machine or "unknown")


def git_version(karpor_version: str = __version__) -> str:
    """The ``gitVersion`` the gateway reports, e.g. ``v1.31.0-karpor.0.1.0``."""
    return f"v1.{KUBERNETES_MINOR}.0-karpor.{karpor_version}"


def version_info(karpor_version: str = __version__) -> dict[str, Any]:
    """The ``version.Info`` object ``/version`` answers."""
    return {
        "major": "1",
        "minor": str(KUBERNETES_MINOR),
        "gitVersion": git_version(karpor_version),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        "compiler": sys.implementation.name,
        "platform": f"{sys.platform}/{_go_arch(platform.machine())}",
    }


def version_bytes(karpor_version: str = __version__) -> bytes:
    """``version_info`` as the JSON body of ``/version``."""
    return json.dumps(version_info(karpor_version), indent=2).encode()
