"""`report`: measured results next to the cookbook's published figures, as Markdown and a PNG of bars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sglang_glm5.eval.cookbook import Cookbook, Published
from sglang_glm5.eval.errors import EvalError
from sglang_glm5.datafiles import read_json_object

TASKS = ("gsm8k", "mmlu", "speed")
METRIC_LABELS = {
    "accuracy": "accuracy",
    "latency_s": "latency (s)",
    "output_throughput_tok_s": "output throughput (tok/s)",
    "mean_tpot_ms": "mean TPOT (ms)",
    "mean_ttft_ms": "mean TTFT (ms)",
}
# PNG panels: title, metrics drawn in it, log scale (CPU and 8-GPU figures differ by orders of magnitude)
PANELS = (
    ("Accuracy", ("accuracy",), False),
    ("Output throughput (tok/s)", ("output_throughput_tok_s",), True),
    ("Latency per token / first token (ms)", ("mean_tpot_ms", "mean_ttft_ms"), True),
)
MEASURED_COLOR, COOKBOOK_COLOR = "tab:blue", "tab:gray"


@dataclass(frozen=True)
class Comparison:
    name: str  # which result file
    label: str  # task and profile
    metric: str
    measured: float | None
    published: Published


def load(path: str | Path) -> dict:
    doc = read_json_object(Path(path), EvalError)
    if doc.get("task") not in TASKS:
        raise EvalError(f"{path}: field 'task' is {doc.get('task')!r}, expected one of {', '.join(TASKS)}")
    if doc["task"] == "speed" and not doc.get("profile"):
        raise EvalError(f"{path}: a speed result without its 'profile'")
    return doc


def label(doc: dict) -> str:
    return f"{doc['task']} {doc['profile']}" if doc["task"] == "speed" else doc["task"]


def comparisons(named: list[tuple[str, dict]], book: Cookbook) -> list[Comparison]:
    rows = []
    for name, doc in named:
        for pub in book.published:
            if pub.task == doc["task"] and pub.profile == doc.get("profile"):
                rows.append(Comparison(name, label(doc), pub.metric, doc.get(pub.metric), pub))
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(named: list[tuple[str, dict]], rows: list[Comparison], book: Cookbook, png_name: str | None) -> str:
    lines = ["# GLM-5 accuracy and speed against the SGLang cookbook", "", f"Published figures: {book.source}.", ""]
    lines += ["## Runs", ""]
    for name, doc in named:
        size = doc.get("num_questions", doc.get("num_prompts"))
        failed = doc.get("failed_requests")
        lines.append(f"- `{name}`: **{label(doc)}**, model `{doc.get('model')}` at {doc.get('base_url')}, "
                     f"{doc.get('created')}; {size} requests, {failed} failed")
        lines.append(f"  `{doc.get('command')}`")
    lines += ["", "## Measured next to the cookbook", "",
              "| run | task | metric | measured | cookbook | cookbook setup | measured / cookbook |",
              "|---|---|---|---:|---:|---|---:|"]
    for r in rows:
        ratio = f"{r.measured / r.published.value:.3g}" if r.measured is not None and r.published.value else "—"
        lines.append(f"| `{r.name}` | {r.label} | {METRIC_LABELS.get(r.metric, r.metric)} | {fmt(r.measured)} | "
                     f"{fmt(r.published.value)} | {r.published.setup} | {ratio} |")
    lines += ["", ("Accuracy from a different question count, model, checkpoint or hardware is not the same figure; "
              "the cookbook's GSM8K is 200 questions, 5 shots; its MMLU all 57 subjects, 5 shots; its speed runs are "
              "the `latency` / `throughput` profiles of `sglang-glm5 bench speed` at full size.")]
    if png_name:
        lines += ["", f"![measured vs cookbook]({png_name})"]
    return "\n".join(lines) + "\n"


def plot(rows: list[Comparison], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(7 * len(PANELS), 5.5))
    for ax, (title, metrics, log) in zip(axes, PANELS):
        bars, seen = [], set()
        for r in rows:
            if r.metric not in metrics:
                continue
            tag = "" if len(metrics) == 1 else f"\n{r.metric.split('_')[1].upper()}"
            if r.measured is not None and (r.name, r.metric) not in seen:
                seen.add((r.name, r.metric))
                bars.append((f"{r.label}{tag}\nmeasured\n{r.name}", r.measured, MEASURED_COLOR))
            if (r.published, "pub") not in seen:
                seen.add((r.published, "pub"))
                bars.append((f"{r.label}{tag}\ncookbook\n" + "\n".join(r.published.setup.split(", ")[:2]), r.published.value,
                             COOKBOOK_COLOR))
        ax.set_title(title)
        if not bars:
            ax.text(0.5, 0.5, "no result", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        xs = range(len(bars))
        drawn = ax.bar(xs, [b[1] for b in bars], color=[b[2] for b in bars])
        ax.bar_label(drawn, labels=[fmt(b[1]).replace(",", "") for b in bars], fontsize=7)
        ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=6, rotation=0)
        if log and all(b[1] > 0 for b in bars):
            ax.set_yscale("log")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (MEASURED_COLOR, COOKBOOK_COLOR)]
    fig.legend(handles, ["measured", "SGLang cookbook"], loc="upper right")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(paths: list[str], out: Path, png: Path | None, book: Cookbook) -> tuple[Path, Path | None]:
    if not paths:
        raise EvalError("report: give at least one result JSON")
    named = [(Path(p).name, load(p)) for p in paths]
    rows = comparisons(named, book)
    png_name = None
    if png is not None:
        plot(rows, png)
        png_name = str(png.resolve().relative_to(out.resolve().parent)) if png.resolve().is_relative_to(out.resolve().parent) else str(png.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(named, rows, book, png_name))
    return out, png
