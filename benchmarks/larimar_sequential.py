"""Larimar sequential edits: natural counterfactual facts written one call at a time, against a LoRA editor.

The model is the natural-facts Larimar (`examples.larimar.model.NATURAL_RECIPE`: MiniLM + SmolLM2,
`memory_readout="text"`, the addressing trained, trained once and cached). Facts are CounterFact-style rewrites
(`hf_ext.testing.larimar_natural.counterfact_records`), subjects and new objects never seen in training.

1. **Larimar**: `write_memory` once per fact (the sequential, recursive least-squares write), up to `--edits`
   facts. At checkpoints, the recall (every target token the greedy one, and ROME's P(new) > P(old)) of the first
   `--probe` facts written and of the latest `--probe`. At `--forget-at` edits, `--forget` of the facts written so
   far are forgotten (`forget_memory`); from then on their recall is tracked too (lower is better), with the kept
   ones.
2. **LoRA editor** on the same decoder (SmolLM2, no memory): each fact is one edit of `--lora-steps` AdamW steps on
   that fact alone (a rank-8 LoRA adapter kept across edits), up to `--lora-edits` facts; the same checkpoints.

All times are CPU seconds of this process (one thread). Writes benchmarks/results/larimar_sequential.md.

    python benchmarks/larimar_sequential.py [--edits 1000] [--lora-edits 64]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch


if __package__ in (None, ""):  # run as a script: make `examples` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "larimar_sequential.md"
CHECKPOINTS = (1, 8, 16, 32, 64, 128, 192, 256, 320, 384, 512, 768, 1000)


def _scores(model, processor, records, read_memory: bool = True) -> tuple[float, float]:
    """(exact-match recall, P(new) > P(old)) of the rewrite prompts of `records`."""
    from hf_ext.larimar.evaluation import target_scores

    prompts = [r.rewrite_prompt for r in records]
    new, exact = target_scores(model, processor, prompts, [r.target_new for r in records], read_memory=read_memory)
    old, _ = target_scores(model, processor, prompts, [r.target_true for r in records], read_memory=read_memory)
    return sum(exact) / len(records), sum(n > o for n, o in zip(new, old)) / len(records)


def larimar_curve(model, processor, records, checkpoints, probe: int, forget_at: int, forget: int) -> list[dict]:
    model.reset_memory()
    rows, forgotten, write_seconds = [], [], 0.0
    for count, record in enumerate(records, start=1):
        start = time.process_time()
        model.write_memory([record.rewrite_text], processor=processor)
        write_seconds += time.process_time() - start
        if count == forget_at:
            # Forget every other fact among those written after the first `probe` (so the first ones stay probed).
            forgotten = records[probe : probe + 2 * forget : 2]
            model.forget_memory([r.rewrite_text for r in forgotten], processor=processor)
        if count not in checkpoints:
            continue
        gone = {r.subject for r in forgotten}
        first = [r for r in records[:probe] if r.subject not in gone]
        latest = [r for r in records[max(0, count - probe) : count] if r.subject not in gone] or first
        row = {"edits": count, "stored": model.memory_state.size, "write_ms": 1e3 * write_seconds / count}
        row["first"], row["first_score"] = _scores(model, processor, first)
        row["latest"], row["latest_score"] = _scores(model, processor, latest)
        if forgotten:
            row["forgotten"], row["forgotten_score"] = _scores(model, processor, forgotten)
        rows.append(row)
        print(row, flush=True)
    return rows


def lora_curve(plain, processor, records, checkpoints, probe: int, steps: int, learning_rate: float) -> list[dict]:
    from peft import LoraConfig, get_peft_model

    from examples.larimar.model import LORA_TARGETS

    peft = get_peft_model(plain, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS.replace(".*decoder", "")))
    optimizer = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=learning_rate)
    rows, train_seconds = [], 0.0
    for count, record in enumerate(records, start=1):
        batch = processor.episode([record.rewrite_text])
        prompt = processor.decoder_ids([record.rewrite_prompt], False, None)[0]
        batch["labels"][0, : len(prompt)] = -100  # the answer only
        start = time.process_time()
        peft.train()
        for _ in range(steps):
            peft(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        train_seconds += time.process_time() - start
        if count not in checkpoints:
            continue
        peft.eval()
        row = {"edits": count, "train_s_per_edit": train_seconds / count}
        row["first"], row["first_score"] = _scores(peft, processor, records[:probe])
        row["latest"], row["latest_score"] = _scores(peft, processor, records[max(0, count - probe) : count])
        rows.append(row)
        print(row, flush=True)
    peft.unload()
    return rows


def _table(rows, columns) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for _, key in columns:
            value = row.get(key)
            cells.append(
                ""
                if value is None
                else f"{value:.0%}"
                if isinstance(value, float) and key != "write_ms" and not key.endswith("_per_edit")
                else f"{value:.2f}"
                if isinstance(value, float)
                else str(value)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--lora-edits", type=int, default=64)
    parser.add_argument("--lora-steps", type=int, default=5)
    parser.add_argument("--lora-learning-rate", type=float, default=3e-3)
    parser.add_argument("--probe", type=int, default=16)
    parser.add_argument("--forget-at", type=int, default=64)
    parser.add_argument("--forget", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.real_models import real_causal_lm_dir
    from hf_ext.testing.larimar_natural import counterfact_records

    torch.set_num_threads(1)
    path = real_larimar_dir(NATURAL_RECIPE)
    model = LarimarForCausalLM.from_pretrained(path).eval()
    processor = LarimarProcessor.from_pretrained(path)
    records = counterfact_records(args.edits, seed=4321, num_neighbours=0)
    checkpoints = {c for c in CHECKPOINTS if c <= args.edits} | {args.edits}
    larimar = larimar_curve(model, processor, records, checkpoints, args.probe, args.forget_at, args.forget)
    plain = AutoModelForCausalLM.from_pretrained(real_causal_lm_dir()).eval()
    lora_checkpoints = {c for c in CHECKPOINTS if c <= args.lora_edits} | {args.lora_edits}
    lora = lora_curve(
        plain,
        processor,
        records[: args.lora_edits],
        lora_checkpoints,
        args.probe,
        args.lora_steps,
        args.lora_learning_rate,
    )

    capacity = model.memory_capacity
    lines = [
        "# Larimar: sequential edits of natural counterfactual facts",
        "",
        f"`python benchmarks/larimar_sequential.py --edits {args.edits} --lora-edits {args.lora_edits}` "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}, one thread). Model: "
        f"`NATURAL_RECIPE` (MiniLM + SmolLM2, context read-out, addressing trained; memory capacity {capacity} "
        "items). Facts: "
        "CounterFact-style rewrites about subjects never seen in training, new objects never answers in training.",
        "",
        f"Recall = every token of the new object is the greedy one after the rewrite prompt; score = P(new) > "
        f"P(old). *first*: the first {args.probe} facts written; *latest*: the latest {args.probe}. At "
        f"{args.forget_at} edits, {args.forget} facts are forgotten (`forget_memory`); *forgotten* tracks them "
        "(lower is better).",
        "",
        "## Larimar, one `write_memory` call per fact",
        "",
        *_table(
            larimar,
            [
                ("edits", "edits"),
                ("stored", "stored"),
                ("first: recall", "first"),
                ("first: P(new)>P(old)", "first_score"),
                ("latest: recall", "latest"),
                ("latest: P(new)>P(old)", "latest_score"),
                ("forgotten: recall", "forgotten"),
                ("forgotten: P(new)>P(old)", "forgotten_score"),
                ("write (ms CPU per fact)", "write_ms"),
            ],
        ),
        "",
        f"## LoRA editor on SmolLM2 ({args.lora_steps} AdamW steps per fact, learning rate {args.lora_learning_rate}, "
        "rank 8, adapter kept across edits)",
        "",
        *_table(
            lora,
            [
                ("edits", "edits"),
                ("first: recall", "first"),
                ("first: P(new)>P(old)", "first_score"),
                ("latest: recall", "latest"),
                ("latest: P(new)>P(old)", "latest_score"),
                ("training (s CPU per edit)", "train_s_per_edit"),
            ],
        ),
        "",
    ]
    figure = _plot(larimar, lora, capacity, args.output.with_suffix(".png"))
    if figure is not None:
        lines += [f"![recall against edits]({figure.name})", ""]
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def _plot(larimar: list[dict], lora: list[dict], capacity: int, path: Path) -> Path | None:
    """Recall against the number of edits, both editors (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for rows, name, style in ((larimar, "Larimar", "-"), (lora, "LoRA", "--")):
        for key, colour in (("first", "tab:blue"), ("latest", "tab:orange"), ("forgotten", "tab:red")):
            points = [(row["edits"], row[key]) for row in rows if key in row]
            if points:
                ax.plot(*zip(*points), style, color=colour, marker="o", label=f"{name}: {key}")
    ax.axvline(capacity, color="grey", linestyle=":", label=f"capacity ({capacity})")
    ax.set_xscale("log")
    ax.set_xlabel("edits written one at a time")
    ax.set_ylabel("exact recall")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
