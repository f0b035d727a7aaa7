"""Example extensions for doma-gateway (see docs/extensions.md)."""
