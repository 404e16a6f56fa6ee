"""The ``twistd karpor`` plugin.

Tiny on purpose: twistd imports every plugin module to list them, so the
gateway's modules (``karpor.app.plugin``) is imported only when used.
This directory and ``twisted/`` have no ``__init__.py`` (twistd would skip them).
"""

from twisted.application.service import ServiceMaker

karpor = ServiceMaker(
    "karpor",
    "karpor.app.plugin",
    "Karpor: a multi-cluster Kubernetes API gateway (one pass to every cluster).",
    "karpor",
)
