"""Policies: pure ASGI classes wrapped around the proxy endpoint, one module each."""
