"""TileLang DSA kernels."""
