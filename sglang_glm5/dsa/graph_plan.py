"""Plans of a graph implementation's ops: argument checks, tuning choices and buffers once per shape key.

A captured forward runs the Python of each op once (at capture); every replay reruns only its kernels. Work a
wrapper does per call (argument checks, a tuning-table or SM-count lookup, output and workspace allocation) is
therefore host time in SGLang's eager warmup and capture, and allocations from the graph's pool at capture. An
implementation with a plans module (`_ImplSource.plans`: dsa/triton/plans.py, dsa/tilelang/plans.py, where
it also looks up the tuning table and the JIT-compiled kernels) does it once instead: its
plan function has the op's signature and returns the keyword arguments of the op's fast path (`checked=True`,
outputs / workspaces, split counts). `PlannedOp` calls the plan at the first call with a shape key, then only the
op with the cached arguments: nothing is checked, looked up or allocated again for that key.

Buffers come from the graph state's `GraphArena`: one buffer per named slot (e.g. "indexer_logits.out"), each plan
taking a view of its prefix. SGLang captures its batch sizes largest first, so the first plan of a slot sizes it for
all; a later, larger one gets a fresh buffer (the old one stays alive for the graphs that read it). Sharing a slot
across shapes and layers is safe because a captured forward runs its ops one after another and each slot's contents
are consumed before the next call writes it (indexer logits by the top-k, partials by their merge, attention output
by o_proj). A slot whose contents must survive from one call to the next (the TileLang top-k's histogram and
ticket, left zeroed by its kernel) is named for its op alone, so no other implementation's op shares it. The top-k output is not an arena slot: IndexCache layers reuse it after later ops ran, so each top-k
layer has its own buffer in the graph state (graph_state.DSAGraphState.topk), passed by the caller as `out`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


class GraphArena:
    """Named buffers that plans take prefix views of (see the module docstring)."""

    def __init__(self):
        self._slots: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}
        self._retired: list[torch.Tensor] = []  # outgrown buffers: graphs captured earlier still read them

    def empty(self, name: str, shape, dtype: torch.dtype, device) -> torch.Tensor:
        device = torch.device(device)
        key, numel = (name, dtype, device), math.prod(shape)
        buf = self._slots.get(key)
        if buf is None or buf.numel() < numel:
            if buf is not None:
                self._retired.append(buf)
            buf = self._slots[key] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._slots.values()) + sum(b.nbytes for b in self._retired)


def shape_key(args: tuple, kwargs: dict) -> tuple:
    """What a plan depends on: each tensor's shape, strides, dtype and device; every other argument's value."""

    def one(x):
        if isinstance(x, torch.Tensor):
            return (tuple(x.shape), x.stride(), x.dtype, x.device)
        return x

    return tuple(one(a) for a in args) + tuple((k, one(v)) for k, v in sorted(kwargs.items()))


class PlannedOp:
    """op(*args) with plan(*args, empty=arena.empty)'s keyword arguments, planned once per shape key."""

    def __init__(self, op: Callable, plan: Callable, arena: GraphArena):
        self.op, self.plan, self.arena = op, plan, arena
        self.plans: dict[tuple, dict] = {}

    def __call__(self, *args, **kwargs):
        key = shape_key(args, kwargs)
        planned = self.plans.get(key)
        if planned is None:
            planned = self.plans[key] = self.plan(*args, **kwargs, empty=self.arena.empty)
        return self.op(*args, **{**kwargs, **planned})  # a plan may settle a knob the caller left open
