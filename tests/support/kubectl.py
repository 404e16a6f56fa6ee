"""kubectl for integration tests: find the binaries, run them, compare their output.

The machines carry ``/usr/lib/google-cloud-sdk/bin/kubectl.1.NN`` (1.27-1.33)
and a ``kubectl`` on ``PATH``.  :func:`find_kubectls` maps a label (``"1.27"``,
``"path"``) to an existing binary; :class:`Kubectl` runs one with a
kubeconfig; :func:`normalize` blanks what changes from run to run (ages,
timestamps, resourceVersions, uids, IPs) so outputs can be compared.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SDK_DIR = Path(os.environ.get("KARPOR_KUBECTL_DIR", "/usr/lib/google-cloud-sdk/bin"))
#: the versions the acceptance matrix uses, newest first
MATRIX_VERSIONS = ("1.33", "1.30", "1.27")
#: how long one kubectl call may take before the test fails (a safety net)
DEFAULT_TIMEOUT = 60.0


def find_kubectls(versions: Sequence[str] = MATRIX_VERSIONS) -> dict[str, Path]:
    """The kubectl binaries present: ``{"1.33": path, ..., "path": path}``."""
    found: dict[str, Path] = {}
    for version in versions:
        candidate = SDK_DIR / f"kubectl.{version}"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found[version] = candidate
    on_path = shutil.which("kubectl")
    if on_path:
        found["path"] = Path(on_path)
    return found


@dataclass(frozen=True)
class Kubectl:
    """One kubectl binary bound to one kubeconfig."""

    binary: Path
    kubeconfig: Path
    label: str = ""

    def command(self, *args: str) -> list[str]:
        """The argv of ``kubectl args...``."""
        return [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl args...``; with ``check`` a failure raises with its output."""
        result = subprocess.run(
            self.command(*args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECACHEDIR": str(self.kubeconfig.parent / ".kube-cache")},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {self.label} {' '.join(args)} exited {result.returncode}:\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def out(self, *args: str, input: str | None = None) -> str:
        """The standard output of a successful ``kubectl args...``."""
        return self.run(*args, input=input).stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start ``kubectl args...`` (for ``-w`` and ``logs -f``); stop it yourself."""
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "KUBECACHEDIR": str(self.kubeconfig.parent / ".kube-cache")},
        )


_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})"), "<TIME>"),
    (re.compile(r"\b\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}\b"), "<TIME>"),
    (re.compile(r"(?<=\s)(\d+[smhdy])+(?=\s|$)"), "<AGE>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<UID>"),
    (re.compile(r'(resourceVersion: |"resourceVersion":\s*)"?\d+"?'), r"\1<RV>"),
    (re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"), "<IP>"),
)


def normalize(text: str) -> str:
    """``text`` with ages, timestamps, uids, resourceVersions and IPs replaced
    by placeholders and trailing spaces removed."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.splitlines())
