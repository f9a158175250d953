from sglang_glm5.checkpoint.tiny import write_tiny_checkpoint

__all__ = ["write_tiny_checkpoint"]
