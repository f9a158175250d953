"""Every patch sglang-glm5 makes into SGLang, in the order it is applied (a later AROUND on the same target wraps an
earlier one). Each names its target, our hook, why, since which SGLang version, whether a missing target stops
start-up (required) or only loses something (optional, `lost`), and when it applies (CPU only; which model serves
under `SGLANG_GLM5_MODEL`). The hook functions live with the concern they serve; this list is the only place that
registers them (`registry.apply`, from `sglang_glm5.plugin.load`)."""

from sglang_glm5.hooks.model_choice import OURS, UPSTREAM
from sglang_glm5.hooks.registry import Kind, Patch, When
from sglang_glm5.parsers import PARSER_NAME

_OVERRIDES = "sglang.srt.arg_groups.overrides"
_KV_PASS = f"{_OVERRIDES}._dsa_kv_cache_dtype_default"
_BACKEND_PASS = f"{_OVERRIDES}._dsa_split_backend_resolution"
_DRAFT_FACTORY = "sglang.srt.speculative.draft_utils.DraftBackendFactory"
_ALLOCATION = "sglang.srt.mem_cache.allocation"
_CACHE_LOCS = "sglang.kernels.ops.speculative.cache_locs"
_EAGLE = "sglang.kernels.ops.speculative.eagle"
_SPEC_TREE = "sglang.kernels.ops.speculative.spec_tree"
_CPU_SPEC = "sglang_glm5.hooks.cpu_eagle"
_CPU_EAGLE_LOST = "EAGLE speculative decoding on CPU"

MODEL = (
    Patch(
        "sglang.srt.models.registry._ModelRegistry.resolve_model_cls", "sglang_glm5.hooks.model:resolve_model_cls",
        Kind.AROUND, "architecture GlmMoeDsaForCausalLM(NextN) resolves to our model classes", models=(OURS,),
    ),
    Patch(
        "sglang.srt.model_executor.model_runner_components.attention_backend_setup."
        "_build_full_attention_backend_from_str",
        "sglang_glm5.hooks.model:build_attention_backend", Kind.AROUND,
        "--attention-backend dsa (or nsa) builds our Glm5DSABackend for GLM-5", models=(OURS,),
    ),
    Patch(
        "sglang.srt.models.registry._ModelRegistry.resolve_model_cls", "sglang_glm5.hooks.upstream:log_model_class",
        Kind.AFTER, "the log names SGLang's own GLM-5 class", models=(UPSTREAM,), required=False,
        lost="the log line naming SGLang's GLM-5 class",
    ),
    Patch(
        f"{_DRAFT_FACTORY}._create_dsa_decode_backend", "sglang_glm5.hooks.draft:dsa_decode_backend", Kind.AROUND,
        "the EAGLE draft (MTP layer) decodes with our DSA backends", models=(OURS,),
    ),
    Patch(
        f"{_DRAFT_FACTORY}._create_dsa_prefill_backend", "sglang_glm5.hooks.draft:dsa_prefill_backend",
        Kind.AROUND, "the EAGLE draft (MTP layer) extends with our DSA backend", models=(OURS,),
    ),
)

CHECKS = (
    Patch(
        "sglang.srt.parser.reasoning_parser.ReasoningParser.DetectorMap",
        "sglang_glm5.parsers.reasoning:Glm5ReasoningDetector", Kind.ENTRY, "--reasoning-parser glm5", key=PARSER_NAME,
    ),
    Patch(
        "sglang.srt.function_call.function_call_parser.FunctionCallParser.ToolCallParserEnum",
        "sglang_glm5.parsers.tool_call:Glm5ToolDetector", Kind.ENTRY, "--tool-call-parser glm5", key=PARSER_NAME,
    ),
    Patch(
        "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request",
        "sglang_glm5.hooks.request_checks:validate_one_request", Kind.AROUND,
        "HTTP 400 for an empty prompt or token ids outside the vocabulary (either one kills SGLang's scheduler)",
    ),
    Patch(
        "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat._validate_request",
        "sglang_glm5.hooks.request_checks:validate_chat_request", Kind.AROUND,
        "HTTP 400 for chat_template_kwargs GLM-5's template cannot take (a 500, or thinking silently on)",
    ),
    Patch(
        "sglang.srt.configs.model_config.ModelConfig.__init__", "sglang_glm5.hooks.override_args:check_model_config_init",
        Kind.AROUND, "a bad --json-model-override-args is refused naming the flag", required=False,
        lost="a bad --json-model-override-args ends in SGLang's bare JSONDecodeError, without naming the flag",
    ),
)

MULTI_NODE = (
    Patch(
        "sglang.srt.distributed.bootstrap._resolve_dist_init_method",
        "sglang_glm5.hooks.multi_node:dist_init_method_after_head", Kind.AROUND,
        "a node other than the head waits a bounded time for --dist-init-addr, then fails naming it (torch alone waits "
        "30 min and fails with a socket error)", required=False,
        lost="a node whose head is unreachable waits torch's default 30 min and fails without naming --dist-init-addr",
    ),
)

CPU = (
    Patch(
        "sglang.srt.distributed.parallel_state.init_model_parallel_group",
        "sglang_glm5.hooks.cpu:parallel_group_without_pynccl", Kind.AROUND,
        "tp > 1 on CPU: SGLang's default use_pynccl builds a NCCL communicator on a CPU device and fails; without it "
        "the groups' torch.distributed (gloo) path carries the collectives",
        when=When.CPU,
    ),
    Patch(
        "sglang.srt.model_loader.loader._get_quantization_config", "sglang_glm5.hooks.cpu:no_fp8_layers_for_glm5",
        Kind.AROUND, "no FP8 layers on CPU: our loader dequantizes the FP8 checkpoint as it streams in",
        when=When.CPU, models=(OURS,),
    ),
    Patch(
        "sglang.srt.arg_groups.model_hook.handle_model_specific_adjustments",
        "sglang_glm5.hooks.cpu:model_adjustments_without_cuda", Kind.AROUND,
        "its DSA branch queries the CUDA device; on CPU that query is answered (0, 0) inside this call only",
        when=When.CPU,
    ),
    Patch(
        "torch.cuda.get_device_capability", "sglang_glm5.hooks.cpu:model_adjustments_without_cuda",
        Kind.SCOPED,
        "swapped for (0, 0) only while handle_model_specific_adjustments runs (it calls torch directly, so no SGLang "
        "target can be hooked instead); restored when that call returns",
        when=When.CPU,
    ),
    Patch(
        _KV_PASS, "sglang_glm5.hooks.cpu:declare_nothing", Kind.AROUND,
        "on CPU, SGLang's pass would pick a GPU KV dtype by compute capability", when=When.CPU,
    ),
    Patch(
        _BACKEND_PASS, "sglang_glm5.hooks.cpu:declare_nothing", Kind.AROUND,
        "on CPU, SGLang's pass would pick GPU kernels (FlashMLA, DeepGEMM)", when=When.CPU,
    ),
    Patch(
        "sglang.srt.mem_cache.kv_cache_configurator.KVCacheConfigurator.configure",
        "sglang_glm5.hooks.cpu:fp8_latent_pool_on_cpu", Kind.AROUND,
        "--kv-cache-dtype fp8_e4m3 on CPU: SGLang refuses an FP8 KV cache for MLA there (its intel_amx kernels are "
        "MHA only); our DSA backend writes and reads GLM-5's FP8 656 B latent rows itself. The module's "
        "current_platform answers is_cpu() False only inside that call (its only is_cpu() reads there are the CPU FP8 "
        "checks), restored when it returns", when=When.CPU, models=(OURS,),
    ),
    Patch(
        f"{_ALLOCATION}.get_last_loc", f"{_CPU_SPEC}:last_loc_in_torch", Kind.AROUND,
        "SGLang's Triton get_last_loc has no CPU driver; its torch version runs", when=When.CPU, required=False,
        lost=_CPU_EAGLE_LOST,
    ),
    *(
        Patch(
            target, f"{_CPU_SPEC}:{hook}", Kind.REPLACE,
            "a *_cpu op that only the AMX build of sgl-kernel has: torch or SGLang's interpreted Triton instead",
            when=When.CPU, required=False, lost=_CPU_EAGLE_LOST,
        )
        for target, hook in (
            (f"{_ALLOCATION}.assign_req_to_token_pool_cpu", "assign_req_to_token_pool"),
            (f"{_CACHE_LOCS}.assign_extend_cache_locs_cpu", "assign_extend_cache_locs"),
            (f"{_CACHE_LOCS}.assign_draft_cache_locs_contiguous_cpu", "assign_draft_cache_locs_contiguous"),
            (f"{_EAGLE}.fill_bonus_tokens_cpu", "fill_bonus_tokens"),
            (f"{_EAGLE}.fill_accept_out_cache_loc_cpu", "fill_accept_out_cache_loc"),
            (f"{_SPEC_TREE}.sgl_build_tree_kernel_efficient_cpu", "build_tree"),
            (f"{_SPEC_TREE}.sgl_verify_tree_greedy_cpu", "verify_tree_greedy"),
        )
    ),
    *(
        Patch(
            module, f"{_CPU_SPEC}:interpret_triton_kernels", Kind.CALL,
            "its @triton.jit kernels run in Triton's interpreter (no CPU driver); a HookRegistry wrapper would be a "
            "plain function, which loses the kernel[grid](...) launch syntax, so each kernel object is swapped",
            when=When.CPU, required=False, lost=_CPU_EAGLE_LOST,
        )
        for module in (_EAGLE, _SPEC_TREE, _CACHE_LOCS)
    ),
)

STARTUP = (  # after CPU, so these wrap its passes: GLM-5 is decided here, other models fall through
    Patch(
        _KV_PASS, "sglang_glm5.hooks.startup:kv_cache_dtype_pass", Kind.AROUND,
        "GLM-5's KV-cache dtype from our policy (calibrated scales, device, DSA implementations)", models=(OURS,),
    ),
    Patch(
        _BACKEND_PASS, "sglang_glm5.hooks.startup:backend_pass", Kind.AROUND,
        "GLM-5's DSA implementations checked against the device (configs/dsa-capabilities.json)", models=(OURS,),
    ),
    Patch(
        _KV_PASS, "sglang_glm5.hooks.upstream:start_up_check", Kind.AFTER,
        "GLM-5's config.json and overrides validated (IndexCache pattern, missing fields), then SGLang's own KV dtype "
        "checked against the checkpoint's k/v scales", models=(UPSTREAM,),
    ),
    Patch(
        "sglang.srt.arg_groups.resolution_hooks.register_resolution_hook",
        "sglang_glm5.hooks.startup:graph_safety_step", Kind.RESOLUTION,
        "CUDA graphs off (reason logged) where GLM-5's DSA picks cannot be captured, and for prefill (runs eagerly)",
        key="handle_model_capability_adjustments", models=(OURS,),
    ),
)

PATCHES = MODEL + CHECKS + MULTI_NODE + CPU + STARTUP
