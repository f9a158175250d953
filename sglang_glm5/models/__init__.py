"""GLM-5 (`GlmMoeDsaForCausalLM`) for SGLang. Modules exporting `EntryClass` are model entry points."""
