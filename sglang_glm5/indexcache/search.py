"""IndexCache's training-free greedy search (arXiv 2603.12201): from all-F, repeatedly turn into S the layer whose
conversion raises the calibration LM loss least.

The calibration forward is HF transformers' `GlmMoeDsaForCausalLM` (the project's independent oracle): an S layer
there is one whose attention holds no indexer, exactly what `indexer_types="shared"` builds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from sglang_glm5.indexcache.plan import FULL, SHARED, IndexerPlan

PLAN_SOURCE = "indexcache search"


class CalibrationError(ValueError):
    pass


@dataclass(frozen=True)
class SearchStep:
    step: int
    pattern: str
    num_full: int
    loss: float
    converted_layer: int | None  # None for the all-F start


class CalibrationModel:
    """An HF GLM-5 whose per-layer indexers can be switched off (S) and on (F) between forwards."""

    def __init__(self, model, batches: list[torch.Tensor]):
        self.model = model
        self.batches = batches  # each [B, T] token ids
        self.attns = [layer.self_attn for layer in model.model.layers]
        self.indexers = [attn.indexer for attn in self.attns]
        missing = [i for i, ix in enumerate(self.indexers) if ix is None]
        if missing:
            raise CalibrationError(f"the calibration model must be built all-F; layers {missing} have no indexer")

    @property
    def num_layers(self) -> int:
        return len(self.attns)

    @torch.no_grad()
    def loss(self, pattern: str) -> float:
        """Mean next-token cross-entropy over every calibration token, with `pattern`'s S layers reusing top-k."""
        IndexerPlan(pattern, PLAN_SOURCE)
        for attn, indexer, c in zip(self.attns, self.indexers, pattern):
            attn.indexer = indexer if c == FULL else None
        total, count = 0.0, 0
        for ids in self.batches:
            logits = self.model(ids, use_cache=False).logits[:, :-1].float()  # [B, T-1, V]
            targets = ids[:, 1:]
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            count += targets.numel()
        return total / count


def target_full(num_layers: int, target_f: int | None, remove_fraction: float | None) -> int:
    if (target_f is None) == (remove_fraction is None):
        raise CalibrationError("give exactly one of --target-f N or --remove-fraction X")
    if remove_fraction is not None:
        if not 0.0 <= remove_fraction < 1.0:
            raise CalibrationError(f"--remove-fraction must be in [0, 1), got {remove_fraction}")
        target_f = num_layers - round(remove_fraction * num_layers)
    if not 1 <= target_f <= num_layers:
        raise CalibrationError(f"--target-f must be in [1, {num_layers}] (layer 0 always runs its indexer), got {target_f}")
    return target_f


def greedy_search(model: CalibrationModel, target_f: int, progress: bool = True) -> list[SearchStep]:
    """Steps from all-F down to `target_f` F layers; layer 0 stays F (nothing before it to reuse)."""
    pattern = FULL * model.num_layers
    steps = [SearchStep(0, pattern, model.num_layers, model.loss(pattern), None)]
    with tqdm(total=model.num_layers - target_f, desc="IndexCache search", unit="layer", disable=not progress) as bar:
        while steps[-1].num_full > target_f:
            candidates = [i for i in range(1, model.num_layers) if pattern[i] == FULL]
            losses = {}
            for i in tqdm(candidates, desc=f"step {len(steps)}", leave=False, disable=not progress):
                losses[i] = model.loss(_with(pattern, i, SHARED))
            best = min(candidates, key=lambda i: (losses[i], i))
            pattern = _with(pattern, best, SHARED)
            steps.append(SearchStep(len(steps), pattern, pattern.count(FULL), losses[best], best))
            bar.set_postfix(loss=f"{losses[best]:.4f}", layer=best)
            bar.update()
    return steps


def _with(pattern: str, layer: int, c: str) -> str:
    return pattern[:layer] + c + pattern[layer + 1 :]


def write_results(steps: list[SearchStep], pattern_path: Path, steps_path: Path, plot_path: Path) -> None:
    for path in (pattern_path, steps_path, plot_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    pattern_path.write_text(steps[-1].pattern + "\n")
    steps_path.write_text(json.dumps([asdict(s) for s in steps], indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s.num_full for s in steps], [s.loss for s in steps], marker="o")
    ax.invert_xaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layers running their own indexer (F)")
    ax.set_ylabel("calibration LM loss (nats/token)")
    ax.set_title("IndexCache greedy search")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plot_path, dpi=120)
    plt.close(fig)
