"""EAGLE draft attention for GLM-5: the backends SGLang's `DraftBackendFactory` builds for the MTP draft (through
hooks/draft.py).

SGLang's factory maps `--attention-backend dsa` to its own DSA backends (FlashMLA / DeepGEMM, GPU only). For a
GLM-5 draft runner it gets ours instead: one `Glm5DSABackend` for draft extend and a `Glm5DSAMultiStepBackend`
holding one backend per draft-decode step. All of them read and write the draft runner's own latent KV pool and
share one index-K store (the draft runner's backend's), so the draft's indexer sees every key it wrote.
"""

from sglang_glm5.attention.backend import Glm5DSABackend
from sglang_glm5.attention.metadata import DraftStep

DSA_STAMP = "dsa"
SUPPORTED_TOPK = 1  # chain drafts: causal-by-position verify and draft steps (a tree needs a custom mask)


class EagleTopkError(ValueError):
    pass


def check_topk(topk: int) -> None:
    if topk != SUPPORTED_TOPK:
        raise EagleTopkError(
            f"--speculative-eagle-topk {topk}: GLM-5's DSA backend drafts chains only; use "
            f"--speculative-eagle-topk {SUPPORTED_TOPK}"
        )


def shared_backend(model_runner, draft_step: DraftStep | None = None) -> Glm5DSABackend:
    owner = getattr(model_runner, "attn_backend", None)
    shared = owner.index_k_store if isinstance(owner, Glm5DSABackend) else None  # one index-K store per KV pool
    return Glm5DSABackend(model_runner, draft_step, index_k_store=shared)


class Glm5DSAMultiStepBackend:
    """SGLang's multi-step draft container: `attn_backends[i]` serves draft step i (the last step only samples)."""

    needs_cpu_seq_lens = False

    def __init__(self, model_runner, topk: int, speculative_num_steps: int):
        check_topk(topk)
        self.topk = topk
        self.speculative_num_steps = speculative_num_steps
        self.attn_backends = [
            shared_backend(model_runner, DraftStep(i, speculative_num_steps, topk))
            for i in range(speculative_num_steps - 1)
        ]

    def init_forward_metadata(self, forward_batch) -> None:
        for backend in self.attn_backends:
            backend.init_forward_metadata(forward_batch)

    # SGLang's draft decode graph runner (speculative/eagle_draft_cuda_graph_runner.py) calls these once for all
    # steps; each step's backend keeps its own graph state (graph_state.py). The draft extend stays eager: SGLang
    # captures it only for its own backend types.
    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        for backend in self.attn_backends:
            backend.init_cuda_graph_state(max_bs, max_num_tokens)

    def init_forward_metadata_out_graph(self, forward_batch, in_capture: bool = False) -> None:
        for backend in self.attn_backends:
            backend.init_forward_metadata_out_graph(forward_batch, in_capture)

    def init_forward_metadata_in_graph(self, forward_batch) -> None:
        for backend in self.attn_backends:
            backend.init_forward_metadata_in_graph(forward_batch)
