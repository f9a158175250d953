"""Which DSA implementation runs where: `configs/dsa-capabilities.json` checked against the detected device.

A choice the device cannot run stops the start-up with a message naming the device, the choice and the choices
that would work; a phase without a choice gets the first supported implementation in the table's pick order.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from sglang_glm5.dsa.impls import DSA_IMPLS, PHASES, DSABackendChoiceError
from sglang_glm5.datafiles import read_json_object

TABLE_FILE = "dsa-capabilities.json"
ANY_ARCH = "*"
CPU = "cpu"
# Tests (and dry runs) pretend to be another device: an arch key of the table, e.g. sm_90 or gfx942.
SIMULATE_ENV = "SGLANG_GLM5_DEVICE"


class DSACapabilityError(DSABackendChoiceError):
    pass


@dataclass(frozen=True)
class Device:
    arch: str  # sm_90, gfx942, cpu
    name: str

    def __str__(self) -> str:
        return f"{self.name} ({self.arch})"


@dataclass(frozen=True)
class Support:
    archs: tuple[str, ...]
    kv_cache_dtypes: tuple[str, ...]
    heads_per_gpu: tuple[int, ...] | None  # None: any
    kv_cache_dtypes_on: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # arch -> more dtypes

    def kv_dtypes(self, arch: str) -> tuple[str, ...]:
        return self.kv_cache_dtypes + self.kv_cache_dtypes_on.get(arch, ())


@dataclass(frozen=True)
class Target:
    """What a start-up asks of the DSA implementations."""

    device: Device
    kv_cache_dtype: str
    heads_per_gpu: int

    def __str__(self) -> str:
        kv = "auto (model dtype)" if self.kv_cache_dtype == "auto" else self.kv_cache_dtype
        return f"{self.device} with kv-cache {kv} and {self.heads_per_gpu} heads per GPU"


@dataclass(frozen=True)
class DSAChoice:
    backends: Mapping[str, str]  # phase -> implementation name
    picked: tuple[str, ...]  # phases chosen here (no flag given)
    supported: Mapping[str, tuple[str, ...]]  # phase -> every implementation that runs on the target

    def describe(self, target: Target) -> str:
        parts = []
        for phase in PHASES:
            how = "picked" if phase in self.picked else "given"
            parts.append(f"{phase}={self.backends[phase]} ({how}; supported: {', '.join(self.supported[phase])})")
        return f"GLM-5 DSA on {target}: " + ", ".join(parts)


@dataclass(frozen=True)
class CapabilityTable:
    path: Path
    archs: Mapping[str, str]  # arch -> title
    impls: Mapping[str, Mapping[str, Support]]  # name -> phase -> support
    needs_env: Mapping[str, Mapping[str, Mapping[str, str]]]  # name -> arch -> {variable: value}
    pick_order: Mapping[str, tuple[str, ...]]  # arch or "default" -> names
    kv_defaults: Mapping[str, tuple[str, ...]]  # "calibrated" / "uncalibrated" / arch -> dtypes, best first
    graph_unsafe: Mapping[str, Mapping[str, str]]  # name -> phase -> why CUDA graphs cannot capture it

    def why_not_graph(self, backends: Mapping[str, str]) -> tuple[str, ...]:
        """Why CUDA graphs cannot capture a run with these picks (phase -> name); empty when they can. Decode
        graphs run the decode pick, EAGLE's target-verify graphs the prefill pick."""
        reasons = []
        for phase in PHASES:
            why = self.graph_unsafe.get(backends.get(phase), {}).get(phase)
            if why:
                reasons.append(f"--dsa-{phase}-backend {backends[phase]}: {why}")
        return tuple(reasons)

    def why_not(self, name: str, phase: str, target: Target, env: Mapping[str, str] = os.environ) -> str | None:
        """None when `name` runs `phase` on `target`, else the reason it does not."""
        if name not in self.impls:
            return f"{name} is not a DSA implementation of sglang_glm5 (ours: {', '.join(self.impls)})"
        support = self.impls[name][phase]
        arch = target.device.arch
        if ANY_ARCH not in support.archs and arch not in support.archs:
            return f"{name} does not run on {target.device}: it supports {', '.join(support.archs)}"
        needed = self.needs_env.get(name, {}).get(arch, {})
        missing = {k: v for k, v in needed.items() if env.get(k) != v}
        if missing:
            settings = " ".join(f"{k}={v}" for k, v in missing.items())
            return f"{name} on {arch} needs {settings}"
        if target.kv_cache_dtype not in support.kv_dtypes(arch):
            return f"{name} {phase} does not take kv-cache {target.kv_cache_dtype}: it takes {', '.join(support.kv_dtypes(arch))}"
        if support.heads_per_gpu is not None and target.heads_per_gpu not in support.heads_per_gpu:
            heads = ", ".join(map(str, support.heads_per_gpu))
            return f"{name} {phase} does not run {target.heads_per_gpu} heads per GPU: it runs {heads}"
        return None

    def runs_on(self, name: str, arch: str) -> bool:
        """Whether the table lists `arch` for `name` in any phase (only then is its vendor import worth probing)."""
        return any(ANY_ARCH in s.archs or arch in s.archs for s in self.impls.get(name, {}).values())

    def supported(self, phase: str, target: Target, available: Collection[str], env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
        """The implementations that run `phase` on `target`, best first."""
        order = self.pick_order.get(target.device.arch, self.pick_order["default"])
        ranked = [*order, *(n for n in self.impls if n not in order)]
        return tuple(n for n in ranked if n in available and self.why_not(n, phase, target, env) is None)

    def choose(
        self,
        flags: Mapping[str, str | None],  # phase -> --dsa-<phase>-backend value
        target: Target,
        available: Collection[str] = tuple(DSA_IMPLS),
        env: Mapping[str, str] = os.environ,
        unavailable: Mapping[str, str] = {},  # name -> why it is not available here (a vendor package missing)
    ) -> DSAChoice:
        backends, picked, supported, refusals = {}, [], {}, []
        for phase in PHASES:
            works = self.supported(phase, target, available, env)
            supported[phase] = works
            flag, name = f"--dsa-{phase}-backend", flags.get(phase)
            if name is None:
                order = self.pick_order.get(target.device.arch, self.pick_order["default"])
                pickable = [n for n in works if n in order]
                if not pickable:
                    refusals.append(f"no DSA {phase} implementation of sglang_glm5 runs on {target}{self._kv_hint(phase, target, available, env)}")
                    continue
                backends[phase] = pickable[0]
                picked.append(phase)
                continue
            reason = self.why_not(name, phase, target, env)
            if reason is None and name not in available:
                reason = unavailable.get(name) or f"{name} is not installed in this sglang_glm5 (installed: {', '.join(available)})"
            if reason is not None:
                instead = f"{flag} {' / '.join(works)}" if works else "none" + self._kv_hint(phase, target, available, env)
                refusals.append(f"{flag} {name}: {reason}. Choices that work here: {instead}")
                continue
            backends[phase] = name
        if refusals:
            raise DSACapabilityError(f"GLM-5 DSA cannot start on {target}:\n  " + "\n  ".join(refusals))
        return DSAChoice(backends, tuple(picked), supported)

    def _kv_hint(self, phase: str, target: Target, available: Collection[str], env: Mapping[str, str]) -> str:
        arch = target.device.arch
        dtypes = {kv for n in available if n in self.impls for kv in self.impls[n][phase].kv_dtypes(arch)}
        works = sorted(kv for kv in dtypes if self.supported(phase, Target(target.device, kv, target.heads_per_gpu), available, env))
        return f"; use --kv-cache-dtype {' / '.join(works)}" if works else ""

    def kv_cache_dtype_candidates(self, device: Device, calibrated: bool) -> tuple[str, ...]:
        """For --kv-cache-dtype auto: dtypes to try, best first."""
        if device.arch in self.kv_defaults:
            return self.kv_defaults[device.arch]
        return self.kv_defaults["calibrated" if calibrated else "uncalibrated"]


def detect_device(device_type: str | None = None, env: Mapping[str, str] = os.environ) -> Device:
    """The device SGLang will run on (`--device`; None: CUDA/ROCm when present), or the simulated one."""
    simulated = env.get(SIMULATE_ENV)
    if simulated:
        return Device(simulated, f"simulated device ({SIMULATE_ENV}={simulated})")
    import torch

    if device_type == CPU or (device_type in (None, "cuda") and not torch.cuda.is_available()):
        return Device(CPU, "CPU")
    if device_type not in (None, "cuda"):
        return Device(device_type, device_type.upper())
    from sglang_glm5.devices import gpu_arch

    name, arch = gpu_arch(0)
    return Device(arch, name)


def load_capabilities(root: Path | None = None) -> CapabilityTable:
    from sglang_glm5.datafiles import configs_dir, field

    path = (Path(root) if root is not None else configs_dir()) / TABLE_FILE
    data = read_json_object(path, DSACapabilityError)

    def get(obj, name, kind, where):  # datafiles.field, raising the table's own error
        return field(obj, name, kind, f"{path}: {where}", DSACapabilityError)

    archs_known = get(data, "archs", dict, "top level")

    def bad(where: str, what: str):
        return DSACapabilityError(f"{path}: {where}: {what}")

    impls, needs_env, graph_unsafe = {}, {}, {}
    for name, row in get(data, "implementations", dict, "top level").items():
        phases = {}
        for phase in PHASES:
            if phase not in row:
                raise bad(f"implementations.{name}", f"missing phase '{phase}'")
            where = f"implementations.{name}.{phase}"
            cell = get(row, phase, dict, f"implementations.{name}")
            archs = tuple(get(cell, "archs", list, where))
            unknown = [a for a in archs if a != ANY_ARCH and a not in archs_known]
            if unknown:
                raise bad(f"{where}.archs", f"unknown arch {unknown} (known: {list(archs_known)})")
            heads = get(cell, "heads_per_gpu", (list, type(None)), where)
            more = {a: tuple(kv) for a, kv in cell.get("kv_cache_dtypes_on", {}).items()}
            unknown = [a for a in more if a not in archs_known]
            if unknown:
                raise bad(f"implementations.{name}.{phase}.kv_cache_dtypes_on", f"unknown arch {unknown}")
            kv = tuple(get(cell, "kv_cache_dtypes", list, where))
            phases[phase] = Support(archs, kv, None if heads is None else tuple(heads), more)
        impls[name] = phases
        needs_env[name] = row.get("needs_env", {})
        graph_unsafe[name] = row.get("cuda_graph_unsafe", {})
        unknown = [p for p in graph_unsafe[name] if p not in PHASES]
        if unknown:
            raise bad(f"implementations.{name}.cuda_graph_unsafe", f"unknown phase {unknown} (phases: {list(PHASES)})")
    pick_order = {k: tuple(v) for k, v in get(data, "auto_pick_order", dict, "top level").items() if k != "about"}
    for key, order in pick_order.items():
        unknown = [n for n in order if n not in impls]
        if unknown:
            raise bad(f"auto_pick_order.{key}", f"unknown implementation {unknown}")
    kv_defaults = {k: tuple(v) for k, v in get(data, "kv_cache_dtype_default", dict, "top level").items() if k != "about"}
    return CapabilityTable(path, dict(archs_known), impls, needs_env, pick_order, kv_defaults, graph_unsafe)
