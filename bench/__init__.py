"""Benchmarks (not tests): each module prints our figure beside a baseline from the same run."""
