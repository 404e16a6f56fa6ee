"""Shared test support: processes on loopback, kubectl, the simulator, the gateway."""
