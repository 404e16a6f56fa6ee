"""``twistd karpor``: command-line options and the service tree."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.python import usage


class Options(usage.Options):
    """Options of ``twistd karpor``."""

    optFlags = [["demo", None, "Start two simulated clusters in process and serve them."]]


def makeService(options: Options) -> IService:
    """Build the service tree for ``twistd karpor``."""
    service: IService = MultiService()
    return service
