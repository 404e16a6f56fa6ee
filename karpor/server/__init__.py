"""Serving: the front protocol, TLS, the twistd service."""
