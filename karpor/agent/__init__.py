"""The agent (``karpor agent``): serves one cluster through a tunnel it dials to the gateway."""
