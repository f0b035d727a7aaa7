"""Benchmarks of doma-gateway against Envoy and minimal Python baselines, on loopback only."""
