"""Calibration inputs for the IndexCache search: HF transformers' GLM-5 (FP8 checkpoints dequantized as they load)
and the calibration text cut into fixed-length token sequences."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from sglang_glm5.checkpoint.schema import INDEX_FILE, SCALE_SUFFIX
from sglang_glm5.config import Glm5Config
from sglang_glm5.indexcache.search import CalibrationError
from sglang_glm5.quant.fp8_block import dequantize_fp8_blocks


def load_hf_model(model_path: Path, dtype: torch.dtype, device: str):
    """HF's GlmMoeDsaForCausalLM built all-F (every layer holds its indexer), in `dtype`, in eval mode."""
    from transformers import AutoConfig, GlmMoeDsaForCausalLM

    cfg = Glm5Config.from_pretrained(model_path)  # the same validation the server runs, before any weight loads
    config = AutoConfig.from_pretrained(model_path, indexer_types=["full"] * cfg.num_hidden_layers)
    if cfg.quant is None:
        model = GlmMoeDsaForCausalLM.from_pretrained(model_path, config=config, dtype=dtype)
    else:
        del config.quantization_config
        # state_dict= still runs transformers' checkpoint conversions (per-expert tensors -> fused expert weights).
        state = dict(_dequantized_tensors(model_path, cfg, dtype))
        model = GlmMoeDsaForCausalLM.from_pretrained(None, config=config, state_dict=state, dtype=dtype)
    return model.to(device).eval()


def _dequantized_tensors(model_path: Path, cfg: Glm5Config, dtype: torch.dtype):
    weight_map = json.loads((model_path / INDEX_FILE).read_text())["weight_map"]
    mtp = f"model.layers.{cfg.num_hidden_layers}."
    names = [n for n in weight_map if not n.endswith(SCALE_SUFFIX) and not n.startswith(mtp)]
    for name in tqdm(names, desc="load + dequantize", unit="tensor"):
        tensor = _read(model_path, weight_map, name)
        if name + SCALE_SUFFIX in weight_map:
            scale = _read(model_path, weight_map, name + SCALE_SUFFIX)
            tensor = dequantize_fp8_blocks(tensor, scale, cfg.quant.block, dtype)
        yield name, tensor.to(dtype) if tensor.is_floating_point() else tensor


def _read(model_path: Path, weight_map: dict, name: str) -> torch.Tensor:
    with safe_open(model_path / weight_map[name], framework="pt") as f:
        return f.get_tensor(name)


def calibration_batches(tokenizer, calib: Path, seq_len: int, max_tokens: int, device: str) -> list[torch.Tensor]:
    """The file's text (UTF-8) tokenized once and cut into [1, seq_len] sequences, at most `max_tokens` in all."""
    if not calib.is_file():
        raise CalibrationError(f"--calib {calib}: no such file")
    ids = tokenizer(calib.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"][:max_tokens]
    if len(ids) < seq_len:
        raise CalibrationError(
            f"--calib {calib}: {len(ids)} tokens, fewer than one sequence of --seq-len {seq_len}"
        )
    usable = len(ids) - len(ids) % seq_len
    return [torch.tensor([ids[i : i + seq_len]], device=device) for i in range(0, usable, seq_len)]
