"""Kubernetes API conventions, pure and stdlib-only: ``Status`` errors, request info, label
selectors, content negotiation, humanized values, discovery documents.

The lowest layer: it imports nothing else of karpor.
"""
