"""The named tiny-checkpoint architectures (configs/tiny-archs.json), resolved into frozen `TinyArch`s.

An arch inherits another arch's fields, takes the fields it lists from GLM-5's real config (configs/glm5-config.json),
then its own `dims`; so `real-attn`'s head counts and head dims are GLM-5's by construction, never retyped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from sglang_glm5.datafiles import DataFileError, configs_dir, field, read_json_object

ARCHS_FILE = "tiny-archs.json"
GLM5_FP8_BLOCK = "glm5"  # `fp8_block`: GLM-5-FP8's own weight_block_size
DEFAULT_ARCH = "tiny"


class ArchError(DataFileError):
    pass


@dataclass(frozen=True)
class TinyArch:
    name: str
    description: str
    dims: Mapping[str, Any]  # config.json fields (index_topk and rope_theta included)
    num_layers: int  # default decoder layers, MTP layer not counted
    fp8_block: tuple[int, int]
    fp8_block_note: str

    @property
    def index_topk(self) -> int:
        return self.dims["index_topk"]


def load_archs() -> Mapping[str, TinyArch]:
    """Every arch of configs/tiny-archs.json, in file order; errors name the file and the arch."""
    path = configs_dir() / ARCHS_FILE
    data = read_json_object(path, ArchError)
    raw = field(data, "archs", dict, str(path), ArchError)
    glm5_path = configs_dir() / field(data, "glm5_config", str, str(path), ArchError)
    glm5 = read_json_object(glm5_path, ArchError)
    resolved: dict[str, TinyArch] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> TinyArch:
        if name in resolved:
            return resolved[name]
        where = f"{path}: arch '{name}'"
        if name in chain:
            raise ArchError(f"{where}: inherits itself through {' -> '.join(chain + (name,))}")
        if name not in raw:
            raise ArchError(f"{path}: no arch '{name}' (known: {', '.join(raw)})")
        spec = raw[name]
        base = resolve(spec["inherit"], chain + (name,)) if "inherit" in spec else None
        dims = dict(base.dims) if base else {}
        for key in spec.get("from_glm5", ()):
            if key not in glm5:
                raise ArchError(f"{where}: from_glm5 field '{key}' is not in {glm5_path}")
            dims[key] = glm5[key]
        dims.update(spec.get("dims", {}))
        if "index_topk" not in dims:
            raise ArchError(f"{where}: no index_topk (in dims, from_glm5 or the inherited arch)")
        block = spec.get("fp8_block", base.fp8_block if base else None)
        if block == GLM5_FP8_BLOCK:
            block = glm5["quantization_config"]["weight_block_size"]
        if not (isinstance(block, (list, tuple)) and len(block) == 2 and all(isinstance(b, int) for b in block)):
            raise ArchError(f"{where}: fp8_block must be [rows, cols] or \"{GLM5_FP8_BLOCK}\", got {block!r}")
        num_layers = spec.get("num_layers", base.num_layers if base else None)
        if not isinstance(num_layers, int):
            raise ArchError(f"{where}: field 'num_layers' must be int, got {num_layers!r}")
        arch = TinyArch(
            name=name,
            description=field(spec, "description", str, where, ArchError),
            dims=MappingProxyType(dims),
            num_layers=num_layers,
            fp8_block=(block[0], block[1]),
            fp8_block_note=spec.get("fp8_block_note", base.fp8_block_note if base else ""),
        )
        resolved[name] = arch
        return arch

    return MappingProxyType({name: resolve(name, ()) for name in raw})


def get_arch(name: str) -> TinyArch:
    archs = load_archs()
    if name not in archs:
        raise ArchError(f"unknown arch {name!r}: choose one of {', '.join(archs)} ({configs_dir() / ARCHS_FILE})")
    return archs[name]
