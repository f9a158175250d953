"""GLM-5 for SGLang."""

__version__ = "0.1.0"
