"""Triton DSA kernels."""
