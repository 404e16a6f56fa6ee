"""Fixtures of the integration tests: simulated clusters and kubectl binaries.

``sim_clusters`` runs one ``karpor sim --clusters 2`` process for the whole
session (stopped in a finalizer); tests that change objects use a namespace
of their own.  ``kubectl_bins`` maps ``"1.33"``, ``"1.30"``, ``"1.27"`` and
``"path"`` to the kubectl binaries present; tests needing one skip with the
reason when none is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kubectl import find_kubectls
from support.sim import SimRun, start_sim


@pytest.fixture(scope="session")
def sim_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimRun]:
    """Two simulated clusters (``sim-1``, ``sim-2``) in one ``karpor sim`` process."""
    out = tmp_path_factory.mktemp("sim-clusters")
    run = start_sim(out, 2, "--log-interval", "0.2")
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="session")
def kubectl_bins() -> dict[str, Path]:
    """The kubectl binaries of the matrix that exist on this machine (may be empty)."""
    return find_kubectls()
