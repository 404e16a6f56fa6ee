"""The gateway's own Kubernetes-style API: Status objects, discovery, the clusters resource."""
