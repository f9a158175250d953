"""Serving GLM-5 with SGLang's own launch_server: CPU environment, start-up hooks, the `serve` command."""
