"""Measuring a real Larimar on natural facts and on ordinary text (issue 16's protocol).

- CounterFact-style edits ([`hf_ext.larimar.evaluation.evaluate_counterfact`]) on the natural fact set
  ([`hf_ext.testing.larimar_natural.counterfact_records`]): 32 rewrites written in one shot;
- "the decoder stays itself": with an empty memory, the share of greedy answers to the general-knowledge prompts
  shipped in `data/general_prompts.txt` that equal plain SmolLM2's, and the perplexity of the held-out text in
  `data/heldout_text.txt` against SmolLM2's.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


__all__ = [
    "addressing",
    "compare_addressing",
    "general_prompts",
    "greedy_agreement",
    "greedy_continuations",
    "heldout_text",
    "measure_model",
    "measure_natural",
    "perplexity",
]

DATA = Path(__file__).parent / "data"


def general_prompts() -> list[str]:
    """The general-knowledge prompts ("The capital of France is") the decoder must keep answering as SmolLM2 does."""
    return [line for line in (DATA / "general_prompts.txt").read_text(encoding="utf-8").splitlines() if line]


def heldout_text() -> list[str]:
    """Held-out natural sentences (never in any training) for the perplexity check."""
    return [line for line in (DATA / "heldout_text.txt").read_text(encoding="utf-8").splitlines() if line]


@torch.no_grad()
def greedy_continuations(model, processor, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations (decoder BOS + prompt, left-padded) of a Larimar (zero latent) or a plain causal LM."""
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM

    tokenizer = processor.decoder_tokenizer
    input_ids, attention_mask = processor.pad_decoder_ids(processor.decoder_ids(prompts, False, None), "left")
    kwargs = {}
    if isinstance(model, LarimarForCausalLM):
        kwargs["memory_latent"] = torch.zeros(len(prompts), model.config.latent_size)
    generated = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **kwargs,
    )
    return [t.strip() for t in tokenizer.batch_decode(generated[:, input_ids.shape[1] :], skip_special_tokens=True)]


def greedy_agreement(model, plain, processor, prompts: list[str], max_new_tokens: int = 8) -> dict:
    """Share of `prompts` whose greedy continuation (`max_new_tokens` tokens) by the Larimar with an empty memory
    equals the plain decoder's; with both lists of answers."""
    ours = greedy_continuations(model, processor, prompts, max_new_tokens)
    theirs = greedy_continuations(plain, processor, prompts, max_new_tokens)
    return {"agreement": sum(a == b for a, b in zip(ours, theirs)) / len(prompts), "larimar": ours, "plain": theirs}


@torch.no_grad()
def perplexity(model, processor, texts: list[str]) -> float:
    """Token-level perplexity of `texts` (each after the decoder's BOS, no EOS) under a Larimar with an empty memory
    (zero latent) or a plain causal LM."""
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM

    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([processor.decoder_ids([text], False, None)[0]])
        kwargs = {}
        if isinstance(model, LarimarForCausalLM):
            kwargs["memory_latent"] = torch.zeros(1, model.config.latent_size)
        logits = model(input_ids=ids, **kwargs).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
        total += float(nll)
        count += ids.shape[1] - 1
    return math.exp(total / count)


def measure_natural(
    model_dir, *, num_facts: int = 32, fact_seed: int = 1234, scope_threshold: float | None = None
) -> dict:
    """Every figure of the protocol for the Larimar saved in `model_dir` (against the SmolLM2 it was built from)."""
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor

    model = LarimarForCausalLM.from_pretrained(model_dir).eval()
    processor = LarimarProcessor.from_pretrained(model_dir)
    return measure_model(model, processor, num_facts=num_facts, fact_seed=fact_seed, scope_threshold=scope_threshold)


def measure_model(
    model, processor, *, num_facts: int = 32, fact_seed: int = 1234, scope_threshold: float | None = None
) -> dict:
    """[`measure_natural`] for a loaded Larimar (its memory is reset; `scope_threshold`, when given, replaces the
    model's for this measurement)."""
    from transformers import AutoModelForCausalLM

    from hf_ext.larimar.evaluation import evaluate_counterfact
    from hf_ext.real_models import real_causal_lm_dir
    from hf_ext.testing.larimar_natural import counterfact_records

    if scope_threshold is not None:
        model.config.scope_threshold = scope_threshold
    plain = AutoModelForCausalLM.from_pretrained(real_causal_lm_dir()).eval()
    model.reset_memory()
    agreement = greedy_agreement(model, plain, processor, general_prompts())
    texts = heldout_text()
    ppl_larimar, ppl_plain = perplexity(model, processor, texts), perplexity(plain, processor, texts)
    counterfact = evaluate_counterfact(model, processor, counterfact_records(num_facts, seed=fact_seed))
    model.reset_memory()
    return {
        "counterfact": counterfact,
        "agreement": agreement["agreement"],
        "agreement_answers": agreement,
        "perplexity": ppl_larimar,
        "perplexity_plain": ppl_plain,
        "perplexity_ratio": ppl_larimar / ppl_plain,
    }


@torch.no_grad()
def addressing(model, processor, records) -> dict:
    """How the memory is addressed once the records' rewrites are written (context read-out): the share of rewrite
    and paraphrase prompts that read their own record's text, and of neighbourhood prompts that read nothing.
    The memory is reset afterwards."""
    model.reset_memory()
    model.write_memory([r.rewrite_text for r in records], processor=processor)
    try:
        groups = {
            "rewrite": [(i, r.rewrite_prompt) for i, r in enumerate(records)],
            "paraphrase": [(i, p) for i, r in enumerate(records) for p in r.paraphrase_prompts],
            "neighbourhood": [(None, p) for r in records for p in r.neighbourhood_prompts],
        }
        result = {}
        for name, items in groups.items():
            read = model.read_memory_items([p for _, p in items], processor)
            key = "neighbourhood_reads_nothing" if name == "neighbourhood" else f"{name}_reads_own"
            result[key] = sum(got == want for (want, _), got in zip(items, read)) / len(items)
    finally:
        model.reset_memory()
    return result


def compare_addressing(num_facts: int = 32, fact_seed: int = 1234) -> list[dict]:
    """The context read-out with three ways of addressing the memory (each scope threshold calibrated on training
    subjects, 5 % of neighbours in scope): the untrained latent projection of the frozen MiniLM, the projection the
    latent recipe trained (`LATENT_NATURAL_RECIPE`), and the addressing `NATURAL_RECIPE` trains."""
    from examples.larimar.model import (
        LATENT_NATURAL_RECIPE,
        NATURAL_RECIPE,
        build_real_larimar,
        calibrate_real_scope,
        real_larimar_dir,
    )
    from hf_ext.larimar.evaluation import evaluate_counterfact
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.testing.larimar_natural import counterfact_records

    records = counterfact_records(num_facts, seed=fact_seed)
    context = {"memory_readout": "text", "text_template": NATURAL_RECIPE.text_template}
    rows = []
    for name in ("untrained projection", "latent recipe's projection", "addressing trained (NATURAL_RECIPE)"):
        if name.startswith("untrained"):
            model, processor = build_real_larimar(NATURAL_RECIPE)
        else:
            path = real_larimar_dir(NATURAL_RECIPE if "addressing" in name else LATENT_NATURAL_RECIPE)
            model = LarimarForCausalLM.from_pretrained(path, **context).eval()
            processor = LarimarProcessor.from_pretrained(path)
        calibration = calibrate_real_scope(model, processor, NATURAL_RECIPE.scope_neighbour_rate)
        row = {"addressing": name, "scope_threshold": calibration["scope_threshold"]}
        row.update(addressing(model, processor, records))
        figures = evaluate_counterfact(model, processor, records)
        model.reset_memory()
        row.update({k: v for k, v in figures.items() if k.endswith(("_exact", "_score")) and "before" not in k})
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None) -> int:
    """`python -m examples.larimar.natural [--output FILE] [--scope-threshold X]`: every figure for `NATURAL_RECIPE`
    (trained once and cached), as JSON."""
    import argparse
    import json

    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir

    parser = argparse.ArgumentParser(description="Measure the natural-facts Larimar (issue 16's protocol).")
    parser.add_argument("--output", default="larimar_natural.json")
    parser.add_argument("--scope-threshold", type=float, default=None)
    parser.add_argument("--compare", action="store_true", help="Compare ways of addressing the memory instead.")
    args = parser.parse_args(argv)
    if args.compare:
        rows = compare_addressing()
        Path(args.output).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        return 0
    result = measure_natural(real_larimar_dir(NATURAL_RECIPE), scope_threshold=args.scope_threshold)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    summary = {k: v for k, v in result["counterfact"].items() if k != "per_record"}
    summary.update({k: result[k] for k in ("agreement", "perplexity", "perplexity_plain", "perplexity_ratio")})
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
