"""Transport: TLS options and the TLS transport, the worker reactor, SO_REUSEPORT listeners,
HTTP/2 windows; and the only modules touching Twisted's and pyOpenSSL's private names
(:mod:`karpor.net.twisted_internals`, :mod:`karpor.net.openssl_internals`, each with its
capability check), with the fallback to Twisted's own TLS (:mod:`karpor.net.implementation`).

Imports only the layers below (:mod:`karpor.kube`, :mod:`karpor.http`).
"""
