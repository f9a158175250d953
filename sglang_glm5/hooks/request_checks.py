"""Request checks that SGLang 0.5.23 lacks, added to its tokenizer manager's own per-request validation.

SGLang validates a request's length against the context, but not that it has any token, nor that its token ids
exist: an empty prompt reaches the model as a zero-token extend and an out-of-range id reaches the embedding, and
either one kills the scheduler (the whole server) instead of failing the request. These checks raise `ValueError`
inside `TokenizerManager._validate_one_request`, which SGLang turns into an HTTP 400 with the message, before the
request is scheduled.

`chat_template_kwargs` are checked in `OpenAIServingChat._validate_request` (an error string there is an HTTP 400):
a key that SGLang itself passes to `apply_chat_template` (e.g. `tools`) made the render fail with a 500, and GLM-5's
template tests `enable_thinking is false`, so a string such as "false" silently turned thinking on.

All checks apply to GLM-5 only; other models keep SGLang's behaviour.
"""

# arguments SGLang's chat serving passes to `tokenizer.apply_chat_template` itself
SERVER_TEMPLATE_ARGS = ("conversation", "tools", "add_generation_prompt", "tokenize", "return_dict")
# GLM-5 chat template switches that it compares with `is false`
BOOLEAN_TEMPLATE_KWARGS = ("enable_thinking", "clear_thinking")
SHOWN_BAD_IDS = 5


def check_input_ids(input_ids: list[int], vocab_size: int) -> None:
    """ValueError naming the problem if the prompt has no token or an id outside [0, vocab_size)."""
    if len(input_ids) == 0:
        raise ValueError("The input is empty (0 tokens): send a prompt of at least one token.")
    bad = [(i, t) for i, t in enumerate(input_ids) if not 0 <= t < vocab_size]
    if bad:
        shown = ", ".join(f"{t} at position {i}" for i, t in bad[:SHOWN_BAD_IDS])
        more = f" (and {len(bad) - SHOWN_BAD_IDS} more)" if len(bad) > SHOWN_BAD_IDS else ""
        noun = "token id" if len(bad) == 1 else "token ids"
        raise ValueError(f"Invalid {noun} {shown}{more}: token ids must be in [0, {vocab_size}).")


def validate_one_request(original, manager, obj, input_ids):
    from sglang_glm5.architectures import is_glm5

    if input_ids is not None and getattr(obj, "input_embeds", None) is None and is_glm5(manager.model_config):
        check_input_ids(input_ids, manager.model_config.vocab_size)
    return original(manager, obj, input_ids)


def chat_template_kwargs_error(kwargs: dict | None) -> str | None:
    """The reason GLM-5's chat template cannot take these `chat_template_kwargs`, or None."""
    kwargs = kwargs or {}
    clashing = [key for key in SERVER_TEMPLATE_ARGS if key in kwargs]
    if clashing:
        return (
            f"chat_template_kwargs must not set {', '.join(map(repr, clashing))}: the server sets it from the request"
            " (use the request's own field, e.g. `tools`)."
        )
    for key in BOOLEAN_TEMPLATE_KWARGS:
        if key in kwargs and not isinstance(kwargs[key], bool):
            return f"chat_template_kwargs[{key!r}] must be true or false, got {kwargs[key]!r}."
    return None


def validate_chat_request(original, serving, request):
    from sglang_glm5.architectures import is_glm5

    error = original(serving, request)
    if error is None and is_glm5(serving.tokenizer_manager.model_config):
        error = chat_template_kwargs_error(request.chat_template_kwargs)
    return error

