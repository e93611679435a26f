"""Backends own device code. ``base.Backend`` is the seam the spine and the tests use."""
