"""The clusters' side: credentials (exec plugins included), pooled HTTP/1.1 connections,
multiplexed HTTP/2, forwarding and splicing.

Imports the layers below it (``kube``, ``http``, ``net``, ``config``, ``auth``).
"""
