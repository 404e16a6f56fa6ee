"""prometheus_client facts the tests share."""

from __future__ import annotations

from prometheus_client import values


def close_value_files() -> None:
    """Close this process's multiprocess value files (prometheus_client 0.21
    on; an older one, the floor the ``lowest`` tox env tests, keeps them open
    until the process ends)."""
    close = getattr(values, "close_all_multiprocess_files", None)
    if close is not None:
        close()
