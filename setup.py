"""Packages: `sglang_glm5` and its subpackages (the DSA kernels live in sglang_glm5/dsa/)."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["sglang_glm5", "sglang_glm5.*"]))
