"""Benchmarks (not tests): stage timings against a loop reference implementation, memory, end to end."""
