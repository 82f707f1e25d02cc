"""Generators of simulated process trees: documented attack behaviour and benign workloads."""
