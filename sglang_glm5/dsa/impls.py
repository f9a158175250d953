"""The DSA implementation table: one entry per kernel family, each with the reference ops' signatures.

Later implementations (triton, tilelang, trtllm) add one loader to `DSA_IMPLS` and one row to
`configs/dsa-capabilities.json`; the model and the backend never change. Names are the values users pass to
SGLang's `--dsa-prefill-backend` / `--dsa-decode-backend`; without a flag the start-up check
(`capabilities.py`) picks the best one the device runs.
"""

import importlib
from dataclasses import dataclass
from typing import Callable, Mapping

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class DSAPhaseImpl:
    name: str
    indexer_logits: Callable  # (q [T,Hi,D], weights [T,Hi], k_cache [S,D], page_table [B,L], q_seq [T], q_pos [T]) -> [T,L] fp32
    topk_positions: Callable  # (logits [T,L], q_pos [T], k) -> [T,k] int32, -1 padded
    sparse_mla: Callable  # (q [T,H,Dqk], kv_cache [S,Dqk], page_table, q_seq, topk [T,k], sm_scale, v_dim) -> [T,H,v_dim]
    # (q_fp8 [T,Hi,D], q_scale [T,Hi], weights, k_fp8 [S,D], k_scale [S], page_table, q_seq, q_pos) -> [T,L] fp32;
    # None: the implementation has no FP8 indexer (the FP8 index-K store then cannot be used with it)
    indexer_logits_fp8: Callable | None = None
    # True: indexer_logits itself reads SGLang's paged FP8 index-K pool ([pages, 64 * 132] uint8) through the slot
    # page table, quantizing q per row (flashmla: DeepGEMM); the FP8 index-K store then hands it the pool's pages
    index_k_pages: bool = False


@dataclass(frozen=True)
class _ImplSource:
    module: str
    graph_module: str | None = None  # its ops under CUDA graph capture, where not `module`'s (dsa/static.py)
    indexer_logits: str = "indexer_logits"
    indexer_logits_fp8: str = "indexer_logits_fp8"  # optional in the module
    topk_positions: str = "topk_positions"
    sparse_mla_prefill: str = "sparse_mla_prefill"
    sparse_mla_decode: str = "sparse_mla_decode"
    indexer_logits_prefill: str | None = None  # a phase's own indexer function, where the phases differ
    indexer_logits_decode: str | None = None
    requires: tuple[str, ...] = ()  # vendor modules that must import on the device (checked at start-up)
    index_k_pages: bool = False  # its indexer_logits reads SGLang's paged FP8 index-K pool (DSAPhaseImpl)
    # plan functions of its ops under graphs (same names and signatures; dsa/graph_plan.py), e.g.
    # dsa/triton/plans.py: checks, tuning and buffers once per shape key instead of per call
    plans: str | None = None

    def load(self, name: str, phase: str, graph: bool = False, arena=None) -> DSAPhaseImpl:
        """arena: the graph state's GraphArena; with `graph` and a plans module, each op is a PlannedOp over it."""
        module = importlib.import_module(self.graph_module if graph and self.graph_module else self.module)
        names = {
            "indexer_logits": getattr(self, f"indexer_logits_{phase}") or self.indexer_logits,
            "topk_positions": self.topk_positions,
            "sparse_mla": getattr(self, f"sparse_mla_{phase}"),
            "indexer_logits_fp8": self.indexer_logits_fp8,
        }
        ops = {field: getattr(module, fn) for field, fn in names.items() if field != "indexer_logits_fp8"}
        ops["indexer_logits_fp8"] = getattr(module, self.indexer_logits_fp8, None)  # optional
        if graph and self.plans is not None:
            from sglang_glm5.dsa.graph_plan import GraphArena, PlannedOp

            plans, arena = importlib.import_module(self.plans), arena if arena is not None else GraphArena()
            ops = {
                field: op if op is None else PlannedOp(op, getattr(plans, names[field]), arena)
                for field, op in ops.items()
            }
        return DSAPhaseImpl(name=name, index_k_pages=self.index_k_pages, **ops)


DSA_IMPLS: Mapping[str, _ImplSource] = {
    "reference": _ImplSource("sglang_glm5.dsa.reference", graph_module="sglang_glm5.dsa.static"),
    "triton": _ImplSource("sglang_glm5.dsa.triton", plans="sglang_glm5.dsa.triton.plans"),
    "tilelang": _ImplSource("sglang_glm5.dsa.tilelang", plans="sglang_glm5.dsa.tilelang.plans"),
    "trtllm": _ImplSource("sglang_glm5.dsa.trtllm"),
    "flashmla": _ImplSource(
        "sglang_glm5.dsa.flashmla",
        indexer_logits_prefill="indexer_logits_prefill",
        indexer_logits_decode="indexer_logits_decode",
        requires=("flash_mla", "deep_gemm"),
        index_k_pages=True,
    ),
}


def import_error(module: str) -> str | None:
    """None when `module` imports here, else why not (a vendor package absent, or present without its GPU runtime)."""
    try:
        importlib.import_module(module)
    except Exception as error:  # ImportError, or OSError from a CUDA extension that cannot load (no libcuda)
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def unavailable_impls(names, probe: Callable[[str], str | None] | None = None) -> dict[str, str]:
    """{name: why it cannot run here} for the implementations in `names` whose required vendor modules do not import."""
    probe = probe or import_error
    missing = {}
    for name in names:
        for module in DSA_IMPLS[name].requires if name in DSA_IMPLS else ():
            error = probe(module)
            if error is not None:
                missing[name] = f"{name} needs the {module} package importable ({error})"
                break
    return missing


class DSABackendChoiceError(ValueError):
    pass


def resolve_impl(flag_value: str | None, phase: str, device_type: str | None = None) -> DSAPhaseImpl:
    assert phase in PHASES, phase
    flag = f"--dsa-{phase}-backend"
    if flag_value is None:
        raise DSABackendChoiceError(
            f"{flag} not resolved: the start-up check (sglang_glm5.attention.capabilities) picks one per device"
        )
    if flag_value not in DSA_IMPLS:
        where = f" on {device_type}" if device_type else ""
        raise DSABackendChoiceError(
            f"{flag} {flag_value}: not implemented by sglang_glm5 for GLM-5{where}; available: {', '.join(DSA_IMPLS)}"
        )
    return DSA_IMPLS[flag_value].load(flag_value, phase)


def resolve_graph_impl(name: str, phase: str, arena=None) -> DSAPhaseImpl:
    """The ops a captured forward of implementation `name` runs: static shapes, no host reads, planned once per
    shape key where the implementation has plans (buffers from `arena`, the graph state's). Whether `name` may be
    captured at all is the capability table's (`cuda_graph_unsafe`), checked at start-up."""
    assert phase in PHASES, phase
    if name not in DSA_IMPLS:
        raise DSABackendChoiceError(f"--dsa-{phase}-backend {name}: not implemented by sglang_glm5 for GLM-5")
    return DSA_IMPLS[name].load(name, phase, graph=True, arena=arena)
