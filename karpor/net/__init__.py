"""The network layer: TLS transports, TLS options, the reactor, HTTP/2 windows."""
