"""The gateway's Prometheus metrics (``/metrics``), one view for every worker.

- :mod:`karpor.metrics.labels`: what a request is labelled with (its verb,
  its long-running kind, the cluster label of requests no cluster answers);
- :mod:`karpor.metrics.gateway`: the metrics of a gateway process and the
  cheap calls the request path makes (children cached per label tuple);
- :mod:`karpor.metrics.supervisor`: the supervisor's own (worker restarts);
- :mod:`karpor.metrics.multiprocess`: the directory the worker processes
  share their values through (``prometheus_client``'s multiprocess mode);
- :mod:`karpor.metrics.exposition`: the text format, aggregated over every
  process;
- :mod:`karpor.metrics.sampling`: pool sizes sampled into gauges;
- :mod:`karpor.metrics.process`: all of it assembled for one gateway process;
- :mod:`karpor.metrics.listener`: the optional plain-HTTP scrape address
  (``metricsAddress``).
"""
