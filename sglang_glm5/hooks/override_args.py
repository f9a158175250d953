"""`--json-model-override-args` checked where SGLang first parses it, so a bad value names the flag.

SGLang's `ModelConfig.__init__` does a bare `json.loads`: a typo ends start-up in a traceback whose last line is a
JSONDecodeError that never says which flag was wrong (and a JSON list or string passes, then fails later).
"""

import inspect

from sglang_glm5.config import parse_override_args


def check_model_config_init(original, self, *args, **kwargs):
    bound = inspect.signature(original).bind(self, *args, **kwargs)
    value = bound.arguments.get("model_override_args")
    if value is not None:
        parse_override_args(value)
    return original(self, *args, **kwargs)

