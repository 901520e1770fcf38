"""`hf-ext demo`: a tour of every method, on tiny offline models, in a few minutes on a CPU.

Each method package contributes a stage by defining `STAGE = DemoStage(...)` in `hf_ext/<method>/demo.py`; the
stages run in `order`, each in its own folder under the output directory, and the tour ends with a summary
table on the terminal and `report.md` (with the stages' plots) in the output directory. A stage that raises is
reported as failed and the others still run; the exit status is non-zero when any stage failed.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path


__all__ = ["DemoContext", "DemoStage", "StageResult", "discover_stages", "run_demo"]


@dataclass
class DemoContext:
    """What a stage gets: its own output folder, the seed, whether to use the real offline models, and the results
    of the stages that ran before it in this tour (by stage name)."""

    output_dir: Path
    seed: int = 0
    real: bool = False
    previous: dict[str, StageResult] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"  {message}", flush=True)


@dataclass
class StageResult:
    """What a stage reports.

    Args:
        headline (`str`): One line for the summary table (the stage's key before / after figure).
        figures (`dict[str, float | str]`): Named figures, shown as a table in the report.
        plots (`list[Path]`): PNGs the stage wrote (inside its output folder).
        details (`str`): Free Markdown for the report.
        samples (`dict[str, list[float]]`): Per-sample scores (higher is better) of the models the stage compares,
            by model name, every list over the same items in the same order; the risk stage ranks them by
            stochastic dominance.
        samples_description (`str`): What one sample score is (e.g. "log-probability of the true answer").
    """

    headline: str
    figures: dict[str, float | str] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    details: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    samples_description: str = ""


@dataclass
class DemoStage:
    """One stage of the tour: `run(context) -> StageResult`."""

    name: str
    title: str
    run: Callable[[DemoContext], StageResult]
    order: int = 100


@dataclass
class _Outcome:
    stage: DemoStage
    seconds: float
    result: StageResult | None = None
    error: str | None = None


def _foundation_stage(context: DemoContext) -> StageResult:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .plotting import line_plot
    from .quantization import load_quantized
    from .testing import tiny_model_dir

    path = tiny_model_dir("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    context.log(f"tiny-llama (random weights) continues: {tokenizer.decode(generated[0], skip_special_tokens=True)!r}")

    fp32_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    quantized = load_quantized(path, bits=4, prepare_for_training=True)
    nf4_bytes = quantized.get_memory_footprint()
    lora = get_peft_model(quantized, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=3e-3)
    batch = tokenizer(["The capital of France is Paris."] * 4, return_tensors="pt")
    torch.manual_seed(context.seed)
    losses = []
    lora.train()
    for _ in range(30):
        loss = lora(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    plot = line_plot(
        context.output_dir / "qlora_loss.png",
        {"QLoRA (NF4 base, LoRA r=8)": losses},
        title="QLoRA on a 4-bit tiny Llama, CPU",
        xlabel="step",
        ylabel="loss",
    )
    return StageResult(
        headline=f"QLoRA loss {losses[0]:.2f} -> {losses[-1]:.2f} on a 4-bit model",
        figures={
            "fp32 weights (KiB)": round(fp32_bytes / 1024, 1),
            "4-bit model footprint (KiB)": round(nf4_bytes / 1024, 1),
            "QLoRA loss, first step": round(losses[0], 4),
            "QLoRA loss, step 30": round(losses[-1], 4),
        },
        plots=[plot],
    )


FOUNDATION_STAGE = DemoStage(
    name="foundation",
    title="Tiny offline models, 4-bit loading and a QLoRA step",
    run=_foundation_stage,
    order=0,
)


def discover_stages() -> list[DemoStage]:
    """The foundation stage and every method package's `STAGE`, in `order`."""
    from .cli import method_packages

    stages = [FOUNDATION_STAGE]
    for package in method_packages():
        module_name = f"hf_ext.{package}.demo"
        if find_spec(module_name) is not None:
            stages.append(importlib.import_module(module_name).STAGE)
    return sorted(stages, key=lambda stage: (stage.order, stage.name))


def run_demo(
    output_dir: str | os.PathLike = "hf-ext-demo",
    stages: list[str] | None = None,
    real: bool = False,
    seed: int = 0,
) -> int:
    """Run the tour (all stages, or those named in `stages`), print a summary table and write `report.md`.

    Returns the exit status: 0 when every stage succeeded, 1 otherwise.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    selected = [s for s in discover_stages() if stages is None or s.name in stages]
    outcomes = []
    previous: dict[str, StageResult] = {}
    for stage in selected:
        print(f"== {stage.name}: {stage.title}", flush=True)
        context = DemoContext(output_dir=output_dir / stage.name, seed=seed, real=real, previous=dict(previous))
        context.output_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            outcome = _Outcome(stage, 0.0, result=stage.run(context))
        except Exception:
            outcome = _Outcome(stage, 0.0, error=traceback.format_exc())
            print(outcome.error, flush=True)
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
        if outcome.result is not None:
            previous[stage.name] = outcome.result
    print(_summary_table(outcomes), flush=True)
    report = _write_report(output_dir, outcomes, real=real)
    print(f"Report: {report}")
    return 0 if all(outcome.error is None for outcome in outcomes) else 1


def _summary_table(outcomes: list[_Outcome]) -> str:
    rows = [("stage", "status", "seconds", "headline")]
    for o in outcomes:
        headline = o.result.headline if o.result else o.error.strip().splitlines()[-1]
        rows.append((o.stage.name, "ok" if o.error is None else "FAILED", f"{o.seconds:.1f}", headline))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def _write_report(output_dir: Path, outcomes: list[_Outcome], real: bool) -> Path:
    from .serialization import write_text

    lines = [
        "# hf-ext demo",
        "",
        f"Models: {'real offline models' if real else 'tiny offline models'}. Generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "| stage | status | seconds | headline |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        headline = o.result.headline if o.result else "failed"
        lines.append(f"| {o.stage.name} | {'ok' if o.error is None else 'FAILED'} | {o.seconds:.1f} | {headline} |")
    for o in outcomes:
        lines += ["", f"## {o.stage.name}: {o.stage.title}", ""]
        if o.error is not None:
            lines += ["```", o.error.rstrip(), "```"]
            continue
        if o.result.figures:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {key} | {value} |" for key, value in o.result.figures.items()]
        if o.result.details:
            lines += ["", o.result.details]
        for plot in o.result.plots:
            relative = Path(plot).resolve().relative_to(output_dir.resolve())
            lines += ["", f"![{relative.stem}]({relative.as_posix()})"]
    return write_text(output_dir / "report.md", "\n".join(lines) + "\n")
