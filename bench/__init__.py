"""Benchmarks: karpor side by side with its peers (the bench issue fills this in)."""
