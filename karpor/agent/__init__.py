"""The agent (``karpor agent``): runs beside a cluster the gateway cannot dial.

It dials out to the gateway with the credentials ``karpor agent-credentials``
wrote (:mod:`karpor.agent.credentials`: the gateway's address and CA, the
agent's client certificate) and serves the cluster it runs beside
(:mod:`karpor.agent.target`: a kubeconfig context or the in-cluster service
account) through that tunnel, with its own credential: the cluster
credential never leaves the cluster.
"""
