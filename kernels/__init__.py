"""Kernels shipped as sglang_glm5.kernels."""
