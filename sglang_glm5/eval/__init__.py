"""Accuracy (GSM8K, MMLU) and speed (SGLang's bench_serving) checks against any running server, and their report."""
