"""Drives Glm5DSABackend's CUDA graph hooks on CPU the way SGLang 0.5.23's graph runners do, on a real ModelRunner
(tiny GLM-5 checkpoint, reference implementation), and writes what it saw as JSON for test_graph_capture.py.

Run in its own process (`python -m tests.attention.graph_worker CHECKPOINT OUT.json`): building a ModelRunner sets
up process-wide state (torch.distributed, SGLang's runtime context, plugins).

Per mode, in the runners' order (model_executor/runner/decode_cuda_graph_runner.py capture_one_shape and replay,
speculative/eagle_draft_cuda_graph_runner.py):
1. `init_cuda_graph_state(max_bs, max_num_tokens)`, the runner's static input slots (SGLang's own decode registry);
2. per capture size (largest first): a batch over the static slots, `out_graph(in_capture=True)`, one warm-up
   run, `on_after_cuda_graph_warmup`, then capture (tests/attention/cpu_graph.py) of `in_graph` + the model forward;
3. per real batch: SGLang's `fill_from` (padding policies) and `build_replay_fb_view`, `out_graph(view)`, replay;
   the eager forward of the same batch (`init_forward_metadata` + forward) is the expected output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path
from types import SimpleNamespace

CAPTURE_BS = (1, 2, 4, 8)
VERIFY_TOKENS = 3  # target verify: draft tokens per request
DRAFT_STEPS = 3  # --speculative-num-steps: two draft-decode step backends
# (group, prompt lengths): decode batches of sizes 3 (graph 4), 5 (graph 8), 1 and 8, lengths on both sides of 64
GROUPS = {"bs3": (20, 45, 70), "bs5": (33, 90, 17, 64, 101), "bs1": (77,), "bs8": (19, 23, 29, 31, 37, 41, 43, 47)}


def build(checkpoint: Path):
    from bench.lib.load_worker import build_runner, prepare_process

    prepare_process()
    runner = build_runner(checkpoint, ["--dtype", "float32", "--context-length", "256"])
    runner.alloc_memory_pool()
    runner.init_attention_backends()
    runner.init_cuda_graphs()  # graphs off (CPU defaults): SGLang's eager runners, as in one_batch.load_model
    return runner


def prefill(runner, lengths, seed):
    """SGLang's own extend (sglang.benchmark.one_batch): requests with KV and indexer keys in the pools."""
    import numpy as np
    from sglang.benchmark.one_batch import extend, prepare_synthetic_inputs_for_latency_test

    rng = np.random.default_rng(seed)
    vocab = runner.model_config.vocab_size
    ids = [rng.integers(3, vocab // 2, n).tolist() for n in lengths]
    reqs = prepare_synthetic_inputs_for_latency_test(len(lengths), 0, custom_inputs=ids)
    next_ids, _, batch = extend(reqs, runner)
    return next_ids, batch


def decode_batch(runner, batch, next_ids):
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    batch.input_ids = next_ids.to(__import__("torch").int64)
    batch.prepare_for_decode()
    return ForwardBatch.init_new(batch, runner, return_hidden_states_before_norm=False)


def spec_batch(fb, mode, tokens_per_request, runner):
    """A verify / draft-decode batch built on a decode batch's requests: positions seq_len .. seq_len + n - 1 (as
    SGLang maps them in req_to_token before the forward), new slots on the requests' own pages."""
    import torch

    req_to_token = runner.req_to_token_pool.req_to_token
    n, bs = tokens_per_request, fb.batch_size
    base = fb.seq_lens - 1  # the decode batch already counts its new token; positions restart at it
    pos = (base[:, None] + torch.arange(n)[None, :])  # [B, n]
    rows = fb.req_pool_indices
    page = runner.token_to_kv_pool.page_size
    first = req_to_token[rows, (base // page) * page].long()  # slot of the page's first position
    slots = first[:, None] + pos % page  # [B, n] same page (lengths chosen so)
    assert ((pos % page) >= (base % page)[:, None]).all(), "draft positions must stay on the request's last page"
    for b in range(bs):
        req_to_token[rows[b], pos[b]] = slots[b].to(req_to_token.dtype)
    if mode == "verify":
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        return dataclasses.replace(
            fb, forward_mode=ForwardMode.TARGET_VERIFY, positions=pos.flatten(), out_cache_loc=slots.flatten(),
            input_ids=fb.input_ids.repeat_interleave(n), seq_lens=base, seq_lens_cpu=base.cpu(),
            seq_lens_sum=int(base.sum()), extend_seq_lens=None, spec_info=None,
        )  # fmt: skip
    # draft decode: positions at the first step, request-major slots [B, topk=1, steps] (SGLang's layout)
    return dataclasses.replace(
        fb, positions=pos[:, 0].contiguous(), out_cache_loc=slots.flatten(), seq_lens=base,
        seq_lens_cpu=base.cpu(), seq_lens_sum=int(base.sum()),
    )  # fmt: skip


class Harness:
    """One mode's graph runner: static slots, captured graphs per batch size, replay of real batches."""

    def __init__(self, runner, backend, mode, tokens_per_request, forward):
        import torch
        from sglang.srt.model_executor.cuda_graph_buffer_registry import build_decode_registry

        self.runner, self.backend, self.mode, self.n, self.forward = runner, backend, mode, tokens_per_request, forward
        self.max_bs, self.max_tokens = max(CAPTURE_BS), max(CAPTURE_BS) * tokens_per_request
        backend.init_cuda_graph_state(self.max_bs, self.max_tokens)
        step0 = getattr(backend, "attn_backends", [backend])[0]
        self.fill = step0.get_cuda_graph_seq_len_fill_value()
        self.registry = build_decode_registry(
            device=torch.device("cpu"), max_bs=self.max_bs, max_num_token=self.max_tokens * (DRAFT_STEPS if mode == "draft" else 1),
            seq_len_fill_value=self.fill, cache_loc_dtype=torch.int64,
        )  # fmt: skip
        self.graphs = {}
        self.capture_fbs = {}
        self.host_syncs = {}

    def slot(self, name):
        return self.registry.get_slot(name).buffer

    def static_ptrs(self) -> dict:
        states = [b.graph_state for b in getattr(self.backend, "attn_backends", [self.backend])]
        ptrs = {f"step{i}.{k}": v.data_ptr() for i, s in enumerate(states) for k, v in s.buffers().items()}
        ptrs.update({f"slot.{n}": self.slot(n).data_ptr() for n in ("input_ids", "positions", "req_pool_indices", "seq_lens", "out_cache_loc")})
        return ptrs

    def capture_all(self, template):
        import torch

        from tests.attention.cpu_graph import CpuGraph

        for name in ("positions", "out_cache_loc", "req_pool_indices", "input_ids"):
            self.slot(name).zero_()
        self.slot("seq_lens").fill_(self.fill)
        for bs in sorted(CAPTURE_BS, reverse=True):
            tokens = bs * self.n
            slots = {n: self.registry.get_slot(n).slice_for(bs, tokens) for n in ("input_ids", "positions", "req_pool_indices", "seq_lens")}
            loc = self.slot("out_cache_loc")[: tokens * (DRAFT_STEPS if self.mode == "draft" else 1)]
            fb = dataclasses.replace(
                template, batch_size=bs, out_cache_loc=loc, seq_lens_cpu=slots["seq_lens"].cpu(),
                seq_lens_sum=bs * self.fill, **slots,
            )  # fmt: skip
            self.backend.init_forward_metadata_out_graph(fb, in_capture=True)

            def run_once(fb=fb):
                self.backend.init_forward_metadata_in_graph(fb)
                return self.forward(self.backend, fb)

            with torch.no_grad():
                run_once()  # warm-up, as SGLang runs before capture
                if hasattr(self.backend, "on_after_cuda_graph_warmup"):
                    self.backend.on_after_cuda_graph_warmup()
                graph = CpuGraph()
                graph.capture(run_once)
            self.graphs[bs], self.capture_fbs[bs], self.host_syncs[bs] = graph, fb, graph.host_syncs

    def replay(self, fb):
        """(padded bs, output rows of the real batch, allocations made by the host prep)."""
        import torch
        from sglang.srt.model_executor.forward_batch_info import ForwardMode
        from sglang.srt.model_executor.runner.decode_cuda_graph_runner import build_replay_fb_view

        from tests.attention.cpu_graph import count_allocations

        raw_bs = fb.batch_size
        bs = min(b for b in CAPTURE_BS if b >= raw_bs)
        raw_tokens, tokens = raw_bs * self.n, bs * self.n
        steps = DRAFT_STEPS if self.mode == "draft" else 1
        if self.mode == "draft":  # the draft runner copies the step-major slots itself (all steps)
            self.slot("out_cache_loc")[raw_tokens * steps : tokens * steps].zero_()
            self.slot("out_cache_loc")[: raw_tokens * steps].copy_(fb.out_cache_loc)
            fill_fb = dataclasses.replace(fb, out_cache_loc=None)
        else:
            fill_fb = fb
        self.registry.fill_from(fill_fb, raw_bs=raw_bs, padded_bs=bs, raw_num_tokens=raw_tokens, padded_num_tokens=tokens)
        buffers = SimpleNamespace(
            **{n: self.slot(n) for n in ("input_ids", "positions", "req_pool_indices", "seq_lens", "seq_lens_cpu")},
            encoder_lens=None, mamba_track_indices=None,
        )  # fmt: skip
        mode = {"decode": ForwardMode.DECODE, "verify": ForwardMode.TARGET_VERIFY, "draft": ForwardMode.DECODE}[self.mode]
        view = build_replay_fb_view(
            forward_batch=fb, buffers=buffers, bs=bs, raw_bs=raw_bs, num_tokens=tokens, global_num_tokens_cpu=None,
            seq_len_fill_value=self.fill, capture_forward_mode=mode, is_encoder_decoder=False,
        )  # fmt: skip
        allocations = count_allocations(lambda: self.backend.init_forward_metadata_out_graph(view))
        with torch.no_grad():
            out = self.graphs[bs].replay()
        got = [x[:raw_tokens].clone() for x in out]
        padded = dataclasses.replace(  # the same padded batch, eager: metadata.py and the reference ops
            self.capture_fbs[bs], **{k: getattr(self.capture_fbs[bs], k).clone() for k in ("input_ids", "positions", "req_pool_indices", "seq_lens", "out_cache_loc")}
        )  # fmt: skip
        want_padded = [x[:raw_tokens] for x in self.eager(padded)]
        return bs, got, want_padded, allocations

    def eager(self, fb):
        import torch

        with torch.no_grad():
            self.backend.init_forward_metadata(fb)
            return self.forward(self.backend, fb)


def layer_forward(steps: int):
    """Embeddings and GLM-5's first decoder layer (DSA attention with its indexer, dense MLP) under the backend, as
    SGLang's runners call the model; for the draft container, one forward per step with that step's backend and
    positions shifted by the step. Later layers are SGLang's MoE, whose CPU fallback picks experts on the host (a
    GPU runs graph-safe fused MoE kernels there), so they stay out of the captured region."""

    def forward(backend, fb):
        from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

        model = forward.model.model
        outs = []
        for i, step_backend in enumerate(getattr(backend, "attn_backends", [backend])[:steps]):
            positions = fb.positions if i == 0 else fb.positions + i
            with forward_context(ForwardContext(attn_backend=step_backend), forward_batch=fb):
                hidden = model.embed_tokens(fb.input_ids)
                hidden, residual, topk = model.layers[0](positions, hidden, None, fb, None)
            outs += [hidden, residual, topk]
        return outs

    return forward


def run_mode(runner, mode, groups, report):
    import torch

    from sglang_glm5.attention.draft import Glm5DSAMultiStepBackend
    from tests.attention.cpu_graph import count_allocations

    if mode == "draft":
        backend = Glm5DSAMultiStepBackend(runner, 1, DRAFT_STEPS)
        n, steps = 1, DRAFT_STEPS - 1
    else:
        backend, n, steps = runner.attn_backend, (VERIFY_TOKENS if mode == "verify" else 1), 1
    forward = layer_forward(steps)
    forward.model = runner.model
    harness = Harness(runner, backend, mode, n, forward)
    ptrs_before = harness.static_ptrs()
    harness.capture_all(groups[0][1])
    if mode == "decode":
        compile_fullgraph(harness, report)
    result = {"capture_host_syncs": harness.host_syncs, "replays": []}
    for name, fb in groups:
        bs, got, want_padded, allocations = harness.replay(fb)
        want = harness.eager(fb)
        floats = [(g, w) for g, w in zip(got, want) if g.is_floating_point()]
        result["replays"].append({
            "batch": name, "raw_bs": fb.batch_size, "graph_bs": bs, "seq_lens": fb.seq_lens.tolist(),
            "bitwise_equal_padded_eager": all(torch.equal(g, w) for g, w in zip(got, want_padded)),
            "topk_equal_eager": all(torch.equal(g, w) for g, w in zip(got, want) if not g.is_floating_point()),
            "max_abs_diff_eager": max(float((g - w).abs().max()) for g, w in floats),
            "finite": all(bool(torch.isfinite(g).all()) for g, _ in floats), "out_graph_allocations": allocations,
        })  # fmt: skip
    result["static_ptrs_unchanged"] = ptrs_before == harness.static_ptrs()
    # each step's captured top-k (IndexCache keeps it for later layers) is written into its layer's graph-state buffer
    states = [b.graph_state for b in getattr(backend, "attn_backends", [backend])][:steps]
    topks = harness.graphs[max(CAPTURE_BS)].output[2::3]
    result["topk_in_layer_buffers"] = len(topks) == len(states) and all(
        t.untyped_storage().data_ptr() in {b.untyped_storage().data_ptr() for b in s.topk.values()}
        for t, s in zip(topks, states)
    )
    if mode == "decode":
        result["frozen_eager_control_equal"] = frozen_eager_control(harness, groups[0][1])
    # the recorded in_graph prep alone: no fresh storage (decode and verify write only into the static buffers)
    fb = harness.capture_fbs[max(CAPTURE_BS)]
    result["in_graph_allocations"] = count_allocations(lambda: backend.init_forward_metadata_in_graph(fb))
    meta = getattr(backend, "attn_backends", [backend])[0].forward_metadata
    state = getattr(backend, "attn_backends", [backend])[0].graph_state
    result["metadata_views_of_buffers"] = all(
        getattr(meta, f).untyped_storage().data_ptr() == getattr(state, f).untyped_storage().data_ptr()
        for f in ("page_table", "seq_lens", "q_seq", "q_pos", "out_cache_loc")
    )
    result["page_table_width"] = int(meta.page_table.shape[1])
    result["req_to_token_width"] = int(runner.req_to_token_pool.req_to_token.shape[1])
    report[mode] = result


def frozen_eager_control(harness, fb) -> bool:
    """The harness catches frozen host values: the eager metadata builder captured in place of the graph hooks (its
    page-table width comes from the capture batch's positions) replays a real batch wrongly."""
    import torch

    from tests.attention.cpu_graph import CpuGraph

    bs = min(b for b in CAPTURE_BS if b >= fb.batch_size)
    capture_fb, backend = harness.capture_fbs[bs], harness.backend
    graph = CpuGraph()
    with torch.no_grad():
        graph.capture(lambda: (backend.init_forward_metadata(capture_fb), harness.forward(backend, capture_fb))[1])
        _, got, want_padded, _ = harness.replay(fb)  # fills the slots with fb, replays the real graph
        frozen = [x[: fb.batch_size] for x in graph.replay()]
    return all(torch.equal(f, w) for f, w in zip(frozen, want_padded))


def compile_fullgraph(harness, report):
    """torch.compile(fullgraph=True) of the captured region (in_graph + embeddings + decoder layer 0) at batch 4:
    Dynamo raises on any graph break (a host read, a value-dependent shape or branch). Control: the same region with
    the eager metadata builder in place of in_graph must break."""
    import torch

    capture_fb, backend = harness.capture_fbs[4], harness.backend

    def region(prep):
        def run():
            prep(capture_fb)
            return harness.forward(backend, capture_fb)

        return run

    def attempt(fn):
        torch._dynamo.reset()
        try:
            with torch.no_grad(), torch._dynamo.config.patch(disable=False):  # SGLang turns Dynamo off unless asked
                return torch.compile(fn, fullgraph=True, backend="eager")(), ""
        except Exception as error:  # Unsupported (graph break), UserError (data-dependent shape), ...
            return None, f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"

    compiled, error = attempt(region(backend.init_forward_metadata_in_graph))
    with torch.no_grad():
        want = region(backend.init_forward_metadata_in_graph)()
    report["compile_fullgraph"] = {
        "error": error, "equal": compiled is not None and all(torch.equal(a, b) for a, b in zip(compiled, want)),
    }  # fmt: skip
    report["compile_fullgraph_eager_control_error"] = attempt(region(backend.init_forward_metadata))[1]


def eager_metadata_control(runner, fb, report):
    """The harness catches a host read: the eager metadata builder (int(q_pos.max())) recorded as if captured."""
    from tests.attention.cpu_graph import CpuGraph

    graph = CpuGraph()
    graph.capture(lambda: runner.attn_backend.init_forward_metadata(fb))
    report["eager_metadata_host_syncs"] = graph.host_syncs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--modes", nargs="+", default=["decode", "verify", "draft"])
    args = parser.parse_args()
    import torch

    random.seed(0)
    torch.manual_seed(0)
    runner = build(args.checkpoint)
    report = {}
    decodes, verifies, drafts = [], [], []
    for seed, (name, lengths) in enumerate(GROUPS.items()):
        next_ids, batch = prefill(runner, lengths, seed)
        fb = decode_batch(runner, batch, next_ids)
        decodes.append((name, fb))
        verifies.append((name, spec_batch(fb, "verify", VERIFY_TOKENS, runner)))
        drafts.append((name, spec_batch(fb, "draft", DRAFT_STEPS, runner)))
    eager_metadata_control(runner, decodes[0][1], report)
    report["index_k_store"] = runner.attn_backend.index_k_store.name
    groups = {"decode": decodes, "verify": verifies, "draft": drafts}
    for mode in args.modes:
        run_mode(runner, mode, groups[mode], report)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
