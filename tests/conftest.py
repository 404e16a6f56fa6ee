"""Settings shared by every test.

Hypothesis runs without its per-example deadline: these machines are shared
and noisy, and a slow example is not a wrong one (speed is measured by
``bench/``, never by a test).  Every other hypothesis default stays.

Under pytest-xdist (``tox`` runs ``pytest -n auto --dist loadgroup``) every
integration test is in one group, so they run one after another in a single
worker process, sharing their session fixtures (gateways, simulators) as in a
plain run, while the other workers take the unit tests, which are CPU-bound
and independent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("karpor", deadline=None)
settings.load_profile("karpor")

_INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every integration test in the ``integration`` xdist group."""
    group = pytest.mark.xdist_group("integration")
    for item in items:
        if _INTEGRATION in item.path.parents:
            item.add_marker(group)
