"""Hardware presets for GLM-5: data in `configs/`, commands built against the installed SGLang's own parser."""
