"""Gateway settings and the cluster directory: parsing, validation, the registry snapshot."""
