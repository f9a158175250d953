"""What a Triton wrapper does on the host: which kernels it launches and which torch ops it runs around them.

The kernels are replaced by recorders (nothing runs), and a TorchDispatchMode sees every aten op of the wrapper:
an `.item()` / `.tolist()` / `bool(tensor)` shows as aten._local_scalar_dense (a device -> host sync on a GPU),
an allocation as aten.empty* / zeros / full.
"""

from dataclasses import dataclass, field

from torch.utils._python_dispatch import TorchDispatchMode

HOST_SYNC_OPS = {"aten._local_scalar_dense", "aten.item", "aten.equal", "aten.is_nonzero", "aten._to_copy"}
ALLOCATING_OPS = ("aten.empty", "aten.zeros", "aten.full", "aten.ones", "aten.new_", "aten.clone")


@dataclass
class HostTrace:
    launches: list = field(default_factory=list)  # (kernel name, grid)
    ops: list = field(default_factory=list)  # aten op names, in order

    def syncs(self):
        return [op for op in self.ops if op.rsplit(".", 1)[0] in HOST_SYNC_OPS]

    def allocations(self):
        return [op for op in self.ops if op.startswith(ALLOCATING_OPS)]


class _Recorder:
    def __init__(self, name, trace):
        self.name, self.trace = name, trace

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.trace.launches.append((self.name, tuple(grid)))

        return launch


class _OpLog(TorchDispatchMode):
    def __init__(self, trace):
        super().__init__()
        self.trace = trace

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.trace.ops.append(str(func))  # e.g. "aten.slice.Tensor"
        return func(*args, **(kwargs or {}))


def trace_host(monkeypatch, module, kernel_names, call):
    """Runs call() with module's kernels `kernel_names` recorded instead of launched -> HostTrace."""
    trace = HostTrace()
    for name in kernel_names:
        monkeypatch.setattr(module, name, _Recorder(name, trace))
    with _OpLog(trace):
        call()
    return trace
