"""GLM-5 reasoning and tool-call parsers, `--reasoning-parser glm5 --tool-call-parser glm5`: the plugin puts them into
SGLang's live parser registries (which `launch_server` also reads for its flag choices; see `hooks/table.py`)."""

PARSER_NAME = "glm5"
