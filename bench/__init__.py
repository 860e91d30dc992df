"""Benchmarks (`make bench`): each prints its figures beside a reference from the same run."""
