"""The fleet status page, served on the operations listener (``metricsAddress``).

Built on the aggregated metrics ``/metrics`` serves, never on the request
path: a sampler (:mod:`karpor.status.sampler`) reads them every few seconds,
with the workers' reports of their clusters, into a board
(:mod:`karpor.status.board`) that keeps the last hour and the last problems.

- :mod:`karpor.status.sample`: one reading of the metrics, reduced;
- :mod:`karpor.status.derive`: rates and latency quantiles between two readings;
- :mod:`karpor.status.history`: the last hour of readings, bounded;
- :mod:`karpor.status.clusters`: what workers report of their clusters, merged;
- :mod:`karpor.status.problems`: problems found between two observations;
- :mod:`karpor.status.gateway`: the gateway's processes and certificates;
- :mod:`karpor.status.board`: the state and the ``/status.json`` document;
- :mod:`karpor.status.page`: the HTML (``static/status.js`` refreshes it);
- :mod:`karpor.status.resource`: the ``twisted.web`` resource;
- :mod:`karpor.status.sampler`: the periodic driver.
"""
