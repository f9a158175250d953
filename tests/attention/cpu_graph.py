"""A CPU stand-in for torch.cuda.CUDAGraph with the same contract: capture records the tensor ops of a function,
replay reruns exactly those ops on the same tensors (no Python, so no host value is recomputed).

What a CUDA graph would get wrong, this gets wrong the same way: a shape or a branch decided from a tensor value at
capture stays frozen into every replay, a metadata tensor made fresh by the host after capture is never read, and
writes land in the buffers that were captured. Host reads during capture (what makes CUDA capture fail) are
recorded in `host_syncs`.
"""

from __future__ import annotations

import importlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten
# ops that read a tensor value on the host or make a shape from values: CUDA capture fails (or freezes them)
HOST_SYNC_OPS = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.item.default,
    aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default, aten.repeat_interleave.Tensor,
}  # fmt: skip


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[tuple] = []  # (func, args, kwargs, out)
        self.host_syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in HOST_SYNC_OPS:
            self.host_syncs.append(str(func))
        self.ops.append((func, args, kwargs, out))
        return out


class _AllocationCounter(TorchDispatchMode):
    """Ops whose tensor outputs have storage that none of their tensor inputs had: fresh allocations."""

    def __init__(self):
        super().__init__()
        self.allocations: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        seen = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() and t.untyped_storage().data_ptr() not in seen:
                self.allocations.append(f"{func} -> {tuple(t.shape)}")
        return out


def count_allocations(fn) -> list[str]:
    with _AllocationCounter() as counter:
        fn()
    return counter.allocations


class CpuGraph:
    def __init__(self):
        self.ops: list[tuple] = []
        self.host_syncs: list[str] = []
        self.output = None

    def capture(self, fn):
        with _Recorder() as recorder:
            self.output = fn()
        self.ops, self.host_syncs = recorder.ops, recorder.host_syncs
        return self.output

    def replay(self):
        """Rerun the recorded ops; tensors made inside the capture map to their new values, all others (weights,
        caches, static buffers) are the captured objects themselves."""
        fresh: dict[int, torch.Tensor] = {}

        def remap(x):
            return fresh.get(id(x), x) if isinstance(x, torch.Tensor) else x

        for func, args, kwargs, out in self.ops:
            result = func(*tree_map(remap, args), **tree_map(remap, kwargs))
            for old, new in zip(tree_flatten(out)[0], tree_flatten(result)[0]):
                if isinstance(old, torch.Tensor):
                    fresh[id(old)] = new
        return tree_map(remap, self.output)


def refuse_calls(monkeypatch, names_by_module):
    """Each named function of each module (dotted name -> names) raises if called: what a planned call must not
    reach (argument checks, tuning and SM-count lookups, buffer allocation, JIT-cache lookups, plans)."""
    for module_name, names in names_by_module.items():
        module = importlib.import_module(module_name)
        for name in names:

            def refuse(*args, _name=f"{module_name}.{name}", **kwargs):
                raise AssertionError(f"a planned call reached {_name}")

            monkeypatch.setattr(module, name, refuse)
