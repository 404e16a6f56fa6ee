"""Transport: TLS options and the TLS transport, the worker reactor, SO_REUSEPORT listeners,
HTTP/2 windows.

Imports only the layers below (:mod:`karpor.kube`, :mod:`karpor.http`).
"""
