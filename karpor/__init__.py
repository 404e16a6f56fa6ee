"""Karpor: one pass to every Kubernetes cluster.

A multi-cluster Kubernetes API gateway on Twisted.  Users hold one
kubeconfig; the gateway proxies any Kubernetes request to the chosen cluster
at ``/apis/cluster.karpor.io/v1beta1/clusters/NAME/proxy/...``.
"""

__version__ = "0.1.0"
