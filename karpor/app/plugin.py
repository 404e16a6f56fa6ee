"""What ``twistd karpor`` runs: its options and its service tree.

The ``twistd`` plugin (``twisted/plugins/karpor_plugin.py``) names this
module: :class:`Options` are the gateway's (:mod:`karpor.app.service`) and
:func:`makeService` builds the demo (:mod:`karpor.app.demo`, simulated
clusters in process) for ``--demo``, else the gateway.  It sits above both
so that the gateway's service module never imports the demo.
"""

from __future__ import annotations

from twisted.application.service import IService

from karpor.app.service import Options, make_gateway_service
from karpor.net import implementation

__all__ = ["Options", "makeService"]


def makeService(options: Options) -> IService:
    """Build the service tree for ``twistd karpor`` once this process's TLS
    implementation is chosen (:mod:`karpor.net.implementation`, logging a
    fallback)."""
    implementation.select(options.settings.tls_implementation)
    if options["demo"]:
        from karpor.app.demo import make_demo_service  # noqa: PLC0415 - only for --demo

        return make_demo_service(options.settings)
    return make_gateway_service(options)
