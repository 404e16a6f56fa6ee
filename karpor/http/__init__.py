"""HTTP as the gateway speaks it, sans-IO: the header model and rewrite, routing, client-
connection bounds, the end of upgraded sessions.

Imports only :mod:`karpor.kube`.
"""
