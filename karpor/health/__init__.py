"""Cluster health: every worker probes every cluster it serves.

:mod:`karpor.health.probe` is the sans-IO part (what one probe asks, what
the answers mean, when the next probe is due, whether a request fails
fast); :mod:`karpor.health.exchange` carries one probe request on a
cluster's pooled connections; :mod:`karpor.health.prober` schedules the
probes on the reactor.  The gateway's *own* health (``/healthz``,
``/readyz``) is :mod:`karpor.gatewayapi.health`.
"""
