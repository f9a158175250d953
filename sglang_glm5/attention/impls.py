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


@dataclass(frozen=True)
class _ImplSource:
    module: str
    indexer_logits: str = "indexer_logits"
    topk_positions: str = "topk_positions"
    sparse_mla_prefill: str = "sparse_mla_prefill"
    sparse_mla_decode: str = "sparse_mla_decode"

    def load(self, name: str, phase: str) -> DSAPhaseImpl:
        module = importlib.import_module(self.module)
        return DSAPhaseImpl(
            name=name,
            indexer_logits=getattr(module, self.indexer_logits),
            topk_positions=getattr(module, self.topk_positions),
            sparse_mla=getattr(module, getattr(self, f"sparse_mla_{phase}")),
        )


DSA_IMPLS: Mapping[str, _ImplSource] = {
    "reference": _ImplSource("sglang_glm5.ops.dsa_reference"),
    "triton": _ImplSource("sglang_glm5.kernels.triton"),
    "tilelang": _ImplSource("sglang_glm5.kernels.tilelang"),
    "trtllm": _ImplSource("sglang_glm5.attention.trtllm"),
}


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
