"""GLM-5's architecture names (config.json `architectures[0]`) and the one test "is this model GLM-5?".

Every hook that must leave other models to SGLang asks `is_glm5`. A leaf module: it imports nothing of this package
or of SGLang, so hooks, the plugin and CLIs can all import it without an import circle.
"""

MAIN = "GlmMoeDsaForCausalLM"
DRAFT = "GlmMoeDsaForCausalLMNextN"  # the MTP layer as SGLang's EAGLE draft model
ARCHITECTURES = (MAIN, DRAFT)


def is_glm5(model_config) -> bool:
    """True for SGLang's `ModelConfig` of a GLM-5 main or draft model."""
    return model_config.hf_config.architectures[0] in ARCHITECTURES
