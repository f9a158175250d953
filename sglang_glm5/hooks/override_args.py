"""`--json-model-override-args` checked where SGLang first parses it, so a bad value names the flag.

SGLang's `ModelConfig.__init__` does a bare `json.loads`: a typo ends start-up in a traceback whose last line is a
JSONDecodeError that never says which flag was wrong (and a JSON list or string passes, then fails later).
"""

import inspect
import json

FLAG = "--json-model-override-args"


class OverrideArgsError(ValueError):
    pass


def parse_override_args(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise OverrideArgsError(
            f"{FLAG} is not valid JSON: {err.msg} at character {err.pos} of {value!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise OverrideArgsError(f"{FLAG} must be a JSON object of config fields, got {type(parsed).__name__}: {value!r}")
    return parsed


def check_model_config_init(original, self, *args, **kwargs):
    bound = inspect.signature(original).bind(self, *args, **kwargs)
    value = bound.arguments.get("model_override_args")
    if value is not None:
        parse_override_args(value)
    return original(self, *args, **kwargs)

