"""`SGLANG_GLM5_MODEL`: which GLM-5 model class and DSA backend serve, ours (default) or SGLang's built-in ones.

With `upstream`, SGLang's own `GlmMoeDsaForCausalLM` and DSA backend serve GLM-5 (and SGLang's own DSA server-args
passes pick its kernels), while our parsers, request checks and start-up checks stay on. A leaf module: the plugin
(which hooks apply) and `serving/cpu.py` (which environment a CPU server gets) both read it.
"""

from collections.abc import Mapping

MODEL_ENV = "SGLANG_GLM5_MODEL"
OURS = "glm5"
UPSTREAM = "upstream"
CHOICES = (OURS, UPSTREAM)


class ModelChoiceError(ValueError):
    pass


def model_choice(env: Mapping[str, str]) -> str:
    """`glm5` (unset or empty) or `upstream`; anything else is refused, naming the variable."""
    value = env.get(MODEL_ENV, "").strip().lower() or OURS
    if value not in CHOICES:
        raise ModelChoiceError(f"{MODEL_ENV}={env[MODEL_ENV]!r}: choose one of {', '.join(CHOICES)} (unset = {OURS})")
    return value
