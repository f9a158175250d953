"""`Glm5DSABackend`: SGLang attention backend for GLM-5's DeepSeek Sparse Attention.

It owns the per-batch `DSAMetadata`, the indexer keys' store (`index_k_store.py`: SGLang's pool in FP8 on GPUs, a
model-dtype store on CPU; `index_k_policy.py` decides), and the MLA latent cache writes (`latent_cache.py`: SGLang's
raw layout or its FP8 656 B rows); the math of each phase
(prefill / decode) comes from the implementation table in `impls.py`.
"""

import logging
import os

import torch
from sglang.srt.layers.attention.base_attn_backend import AttentionBackend
from sglang.srt.runtime_context import get_exec, get_schedule

from sglang_glm5.attention.graph_state import DSAGraphHooks
from sglang_glm5.dsa.impls import resolve_impl
from sglang_glm5.attention.index_k_policy import POOL_FP8, choose_index_k_store
from sglang_glm5.attention.index_k_store import IndexKStore, ModelDtypeIndexKStore, PoolFP8IndexKStore
from sglang_glm5.attention.indexer_workspace import (
    MIB,
    chunked_topk,
    load_indexer_workspace,
)
from sglang_glm5.attention.latent_cache import log_latent_layout, read_latent, write_latent
from sglang_glm5.attention.metadata import DraftStep, DSAMetadata

logger = logging.getLogger(__name__)

TRACE_INDEXER_ENV = "SGLANG_GLM5_TRACE_INDEXER"  # "1": log every indexer call (layer, phase, tokens)


def indexer_layers_of(model) -> set[int]:
    """IndexCache: only the layers whose attention runs its own indexer (Glm5DsaAttention; S layers never read keys).
    The draft model's MTP layer always runs one."""
    return {m.layer_id for m in model.modules() if getattr(m, "runs_indexer", False)}


def build_index_k_store(model_runner, impls, device_type: str) -> IndexKStore:
    platform = "hip" if device_type == "cuda" and torch.version.hip else device_type
    choice = choose_index_k_store(platform, impls)
    pool = model_runner.token_to_kv_pool
    layers = indexer_layers_of(model_runner.model)
    if choice.store == POOL_FP8:
        store = PoolFP8IndexKStore(pool, layers)
    else:
        slots = pool.size + pool.page_size
        store = ModelDtypeIndexKStore(layers, slots, model_runner.model.glm5_config.index_head_dim, model_runner.model_config.dtype, pool.device)
    logger.info(
        "GLM-5 DSA index-K store: %s (%s), layers %s, %.1f MiB beside SGLang's pool",
        store.name, choice.why, list(store.layers), store.private_bytes() / MIB,
    )  # fmt: skip
    sglang_index_k = getattr(pool, "index_k_with_scale_buffer", None)  # SGLang's DSA pool allocates it whatever the backend
    if store.name != POOL_FP8 and sglang_index_k:
        logger.info(
            "GLM-5 DSA: SGLang's KV pool also holds an FP8 index-K buffer (%.1f MiB) that the %s store never reads",
            sum(b.nbytes for b in sglang_index_k) / MIB, store.name,
        )  # fmt: skip
    return store


class Glm5DSABackend(DSAGraphHooks, AttentionBackend):  # CUDA graph hooks: graph_state.py
    def __init__(self, model_runner, draft_step: DraftStep | None = None, index_k_store: IndexKStore | None = None):
        super().__init__()
        self.draft_step = draft_step
        self.device = model_runner.device
        self.req_to_token_pool = model_runner.req_to_token_pool
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        device_type = torch.device(self.device).type
        kernel = get_exec().kernel  # resolved server args: the start-up check's picks (serving/startup_check.py)
        self.impls = {
            "prefill": resolve_impl(kernel.dsa_prefill_backend, "prefill", device_type),
            "decode": resolve_impl(kernel.dsa_decode_backend, "decode", device_type),
        }
        logger.info(
            "GLM-5 DSA backend: prefill=%s decode=%s", self.impls["prefill"].name, self.impls["decode"].name
        )
        if device_type != "cpu" and "reference" in (impl.name for impl in self.impls.values()):
            logger.warning("GLM-5 DSA: the torch reference implementation runs on %s; it is correct but slow", device_type)
        self.index_topk = model_runner.model.glm5_config.index_topk  # our validated config (models/glm5.py), not hf_config
        log_latent_layout(self.token_to_kv_pool)
        # One store per KV pool: EAGLE's draft backends share the draft runner's (attention/draft.py).
        self.index_k_store = index_k_store or build_index_k_store(model_runner, tuple(self.impls.values()), device_type)
        self.trace_indexer = os.environ.get(TRACE_INDEXER_ENV) == "1"
        self.indexer_workspace = load_indexer_workspace()
        self._log_indexer_memory(model_runner.model_config.context_len, get_schedule().chunked_prefill_size)
        self.forward_metadata: DSAMetadata | None = None

    def _log_indexer_memory(self, context: int, chunked_prefill_size: int | None):
        rows = chunked_prefill_size if chunked_prefill_size and chunked_prefill_size > 0 else context
        ws, k = self.indexer_workspace, self.index_topk
        logger.info(
            "GLM-5 DSA indexer memory per GPU: %s keys, %d layers; logits "
            "workspace %d rows x %d context fp32 = %.1f MiB (budget %d B); top-k %d rows x %d int32 = %.1f MiB",
            self.index_k_store.name, len(self.index_k_store.layers), min(rows, ws.rows_per_pass(context)), context,
            ws.logits_bytes(rows, context) / MIB, ws.budget_bytes, rows, k, ws.topk_bytes(rows, k) / MIB,
        )  # fmt: skip

    def init_forward_metadata(self, forward_batch):
        self.forward_metadata = DSAMetadata.from_forward_batch(
            forward_batch, self.req_to_token_pool.req_to_token, self.draft_step
        )

    def select_topk(
        self,
        layer_id: int,
        q: torch.Tensor,  # [T, Hi, D] indexer queries, RoPE applied
        k: torch.Tensor,  # [T, D] indexer keys of the new tokens
        weights: torch.Tensor,  # [T, Hi] head weights, already scaled by Hi**-0.5
    ) -> torch.Tensor:  # [T, index_topk] positions, -1 padded
        meta = self.forward_metadata
        impl = self.phase_impl(meta)
        store = self.index_k_store
        if self.trace_indexer:
            logger.info("GLM-5 DSA indexer call: layer %d %s %d tokens (%s keys)", layer_id, meta.phase, q.shape[0], store.name)
        store.write(layer_id, meta.out_cache_loc, k)
        key_rows = self.graph_state.index_key_rows(meta.page_table) if meta.static else None
        keys = store.read(layer_id, meta.page_table, key_rows)
        out = self.graph_state.topk_out(layer_id, q.shape[0]) if meta.static else None  # the layer's own buffer
        return chunked_topk(impl, self.indexer_workspace, q, weights, keys, meta.q_seq, meta.q_pos, self.index_topk, out)

    def _forward(self, q, k, v, layer, forward_batch, save_kv_cache=True, k_rope=None, topk=None, **kwargs):
        assert k_rope is not None and topk is not None, "GLM-5 DSA attention needs k_rope and topk"
        meta = self.forward_metadata
        impl = self.phase_impl(meta)
        pool = self.token_to_kv_pool
        if save_kv_cache:
            write_latent(pool, layer, meta.out_cache_loc, k.view(k.shape[0], -1), k_rope.view(k_rope.shape[0], -1))
        kv_cache = read_latent(pool, layer.layer_id, layer.head_dim)  # [S, 576] KV dtype or [S, 656] FP8 rows
        q = q.view(-1, layer.tp_q_head_num, layer.head_dim)  # [T, H, 576]
        out = impl.sparse_mla(q, kv_cache, meta.page_table, meta.q_seq, topk, layer.scaling, layer.v_head_dim)
        return out.reshape(q.shape[0], layer.tp_q_head_num * layer.v_head_dim)  # [T, H*512]

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        return self._forward(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)

    def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        return self._forward(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)

    def support_triton(self):
        return False


def create_backend(model_runner):
    return Glm5DSABackend(model_runner)
