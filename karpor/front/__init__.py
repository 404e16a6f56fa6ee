"""The client-facing protocol adapter and the request pipeline.

Imports every layer below it; only :mod:`karpor.app` imports it.
"""
