"""Packages: `sglang_glm5` plus the top-level `kernels/` tree, shipped as `sglang_glm5.dsa`."""

from setuptools import find_packages, setup

KERNELS = ["sglang_glm5.dsa"] + [f"sglang_glm5.dsa.{p}" for p in find_packages("kernels")]

setup(
    packages=find_packages(include=["sglang_glm5", "sglang_glm5.*"]) + KERNELS,
    package_dir={"sglang_glm5.dsa": "kernels"},
)
