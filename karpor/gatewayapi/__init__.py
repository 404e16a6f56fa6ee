"""The gateway's own API: the clusters resource, discovery, version, health.

Imports the layers below it, up to :mod:`karpor.metrics`.
"""
