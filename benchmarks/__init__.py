"""Benchmarks: sampler quality against step count, speed and memory, and the GPU check (see README.md)."""
