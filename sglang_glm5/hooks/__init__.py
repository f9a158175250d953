"""Every patch into SGLang: declared in `table.py` (target, why, since which SGLang version, required or optional, when),
checked and applied by `registry.py`, called once from `sglang_glm5.plugin.load`."""
