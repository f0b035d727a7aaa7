"""Helpers shared by the test suite: keys and tokens, real processes, Envoy."""
