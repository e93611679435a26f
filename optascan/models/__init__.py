"""Models: where a model name leads (catalog, local directory, the hub cache)."""
