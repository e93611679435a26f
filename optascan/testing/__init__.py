"""Test helpers for optascan (no runtime code lives here)."""
