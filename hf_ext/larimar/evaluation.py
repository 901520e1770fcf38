"""Measuring what a Larimar recalls: exact-match answers to fact prompts."""

from __future__ import annotations

import torch

from .memory import nearest_distance


__all__ = [
    "DECODER_LORA_TARGETS",
    "answer",
    "calibrate_scope_threshold",
    "evaluate_counterfact",
    "exact_match_recall",
    "lora_edit",
    "scope_distances",
    "target_scores",
]


@torch.no_grad()
def answer(
    model,
    processor,
    prompts: list[str],
    *,
    memory_latent: torch.Tensor | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 64,
) -> list[str]:
    """Greedy continuations of `prompts` (up to the end-of-sequence token), stripped.

    The memory is read with the prompts themselves (scope detection included) unless `memory_latent` is given.
    """
    results = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        inputs = processor(chunk).to(model.device)
        kwargs = {}
        if memory_latent is not None:
            kwargs["memory_latent"] = memory_latent[start : start + batch_size]
            inputs.pop("encoder_input_ids")
            inputs.pop("encoder_attention_mask")
        tokenizer = processor.decoder_tokenizer
        generated = model.generate(
            **inputs,
            **kwargs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        results += [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return results


def exact_match_recall(model, processor, facts, *, memory_latent: torch.Tensor | None = None) -> float:
    """Fraction of `facts` (with `.prompt` and `.object`) whose prompt is answered with exactly the object."""
    if not facts:
        raise ValueError("facts is empty.")
    answers = answer(model, processor, [f.prompt for f in facts], memory_latent=memory_latent)
    return sum(a == f.object for a, f in zip(answers, facts)) / len(facts)


DECODER_LORA_TARGETS = r".*decoder.*\.(c_attn|c_proj|c_fc|q_proj|k_proj|v_proj|o_proj|up_proj|down_proj|gate_proj)"
"""Every attention and MLP projection of a GPT-2- or Llama-family decoder inside a Larimar."""


def lora_edit(
    model,
    processor,
    facts,
    *,
    learning_rate: float,
    max_steps: int,
    target_recall: float = 0.9,
    rank: int = 8,
    target_modules: str = DECODER_LORA_TARGETS,
) -> dict:
    """What a user would do without an episodic memory: LoRA-tune the Larimar's decoder (empty memory) on `facts`,
    checking exact-match recall after every step, until it reaches `target_recall` or `max_steps`.

    Returns a dict: `train_cpu_seconds` (the training steps alone), `train_and_check_cpu_seconds`, `steps`,
    `recall`, `reached` and `recall_curve`. The model is left unchanged (the adapter is removed). Time is CPU time
    of this process (`time.process_time`).
    """
    import time

    from peft import LoraConfig, get_peft_model

    model.reset_memory()
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules, task_type="CAUSAL_LM")
    )
    batch = processor.episode([f.text for f in facts])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}  # no encoder inputs: a zero latent
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.0
    )
    train_seconds = check_seconds = 0.0
    recall, steps, curve = 0.0, 0, []
    try:
        while steps < max_steps and recall < target_recall:
            start = time.process_time()
            peft_model.train()
            peft_model(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            train_seconds += time.process_time() - start
            steps += 1
            start = time.process_time()
            peft_model.eval()
            recall = exact_match_recall(peft_model, processor, facts)
            check_seconds += time.process_time() - start
            curve.append(recall)
    finally:
        peft_model.unload()  # back to the untouched decoder
    return {
        "train_cpu_seconds": train_seconds,
        "train_and_check_cpu_seconds": train_seconds + check_seconds,
        "steps": steps,
        "recall": recall,
        "reached": recall >= target_recall,
        "recall_curve": curve,
    }


@torch.no_grad()
def target_scores(
    model,
    processor,
    prompts: list[str],
    targets: list[str],
    *,
    read_memory: bool = True,
    batch_size: int = 32,
) -> tuple[list[float], list[bool]]:
    """Per (prompt, target): the log-probability of the target's tokens after the prompt (teacher-forced, the
    decoder's BOS first) and whether each of them is the arg-max next token (the greedy answer starts with the
    target).

    `model` is a [`LarimarForCausalLM`] conditioned on what the prompt reads from its episodic memory (scope detection
    included; a zero latent when `read_memory=False` or the memory is empty), or any plain causal LM.
    """
    from .modeling_larimar import LarimarForCausalLM

    if len(prompts) != len(targets):
        raise ValueError(f"Got {len(prompts)} prompts but {len(targets)} targets; give one target per prompt.")
    if not prompts:
        raise ValueError("prompts is empty.")
    log_probs, exact = [], []
    for start in range(0, len(prompts), batch_size):
        chunk_prompts = prompts[start : start + batch_size]
        chunk_targets = targets[start : start + batch_size]
        full = processor.decoder_ids([f"{p} {t}" for p, t in zip(chunk_prompts, chunk_targets)], False, None)
        heads = processor.decoder_ids(chunk_prompts, False, None)
        for ids, head, prompt in zip(full, heads, chunk_prompts):
            if ids[: len(head)] != head or len(ids) == len(head):
                raise ValueError(
                    f"The tokens of the prompt {prompt!r} are not a prefix of the prompt followed by its target."
                )
        input_ids, attention_mask = processor.pad_decoder_ids(full, "right")
        kwargs = {}
        if isinstance(model, LarimarForCausalLM):
            if read_memory and model.config.memory_readout == "text":
                kwargs.update({k: v.to(model.device) for k, v in processor.encode_memory(chunk_prompts).items()})
            elif read_memory:
                latent = model.read_memory(chunk_prompts, processor=processor)
            else:
                latent = torch.zeros(len(chunk_prompts), model.config.latent_size, device=model.device)
            if "encoder_input_ids" not in kwargs:
                kwargs["memory_latent"] = latent.to(model.device)
        logits = model(
            input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device), **kwargs
        ).logits.float()
        scores = logits.log_softmax(-1)
        for row, (ids, head) in enumerate(zip(full, heads)):
            positions = torch.arange(len(head), len(ids))
            target_ids = torch.tensor(ids[len(head) :])
            log_probs.append(float(scores[row, positions - 1, target_ids].sum()))
            exact.append(bool((logits[row, positions - 1].argmax(-1).cpu() == target_ids).all()))
    return log_probs, exact


def _fraction(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def evaluate_counterfact(model, processor, records, *, write: bool = True, max_new_tokens: int = 4) -> dict:
    """CounterFact-style scores of one-shot memory edits: efficacy, generalisation and locality.

    `records` are [`~hf_ext.testing.larimar_natural.CounterFactRecord`]s (or any objects with `rewrite_prompt`,
    `rewrite_text`, `target_true`, `target_new`, `paraphrase_prompts` and `neighbourhood_prompts`). The model's
    current state is the *unedited* model; with `write=True` (the default) every rewrite is then written into its
    episodic memory in one call (`write_memory`) and the memory is left that way; with `write=False` the caller has
    written them already and only the unedited-model measurements of locality are skipped.

    Each score is given two ways, as in the CounterFact literature:

    - `*_exact`: the greedy answer starts with the new object (every target token is the arg-max, teacher-forced);
    - `*_score`: ROME's "P(target_new) > P(target_true)" for rewrite and paraphrase prompts.

    Locality (neighbourhood prompts: the same relation about other subjects) is measured against the unedited
    model: `neighbourhood_exact` is the fraction of neighbourhood prompts whose greedy continuation
    (`max_new_tokens` tokens) is unchanged by the edit, `neighbourhood_score` the fraction where
    P(target_true) > P(target_new) holds after the edit exactly when it held before (CounterFact's neighbourhood
    score compares the two targets; with invented subjects the unedited model's preference is the reference).
    The `*_before` entries are the same measures on the unedited model.

    Returns a dict of those fractions and `num_records`, `num_paraphrases`, `num_neighbourhood` and `per_record`
    (one dict per record: the greedy answers and log-probabilities).
    """
    from .modeling_larimar import LarimarForCausalLM

    records = list(records)
    if not records:
        raise ValueError("records is empty.")
    if write and not isinstance(model, LarimarForCausalLM):
        raise TypeError(f"write=True needs a LarimarForCausalLM to write the edits into; got {type(model).__name__}.")
    groups = {
        "rewrite": [(i, r.rewrite_prompt) for i, r in enumerate(records)],
        "paraphrase": [(i, p) for i, r in enumerate(records) for p in r.paraphrase_prompts],
        "neighbourhood": [(i, p) for i, r in enumerate(records) for p in r.neighbourhood_prompts],
    }

    def measure() -> dict:
        result = {}
        for name, items in groups.items():
            if not items:
                continue
            prompts = [p for _, p in items]
            new, exact = target_scores(model, processor, prompts, [records[i].target_new for i, _ in items])
            true, _ = target_scores(model, processor, prompts, [records[i].target_true for i, _ in items])
            result[name] = {"new": new, "true": true, "exact": exact}
            if name == "neighbourhood":
                result[name]["answers"] = answer(model, processor, prompts, max_new_tokens=max_new_tokens)
        return result

    before = measure() if write else None
    if write:
        model.write_memory([r.rewrite_text for r in records], processor=processor)
    after = measure()

    figures = {"num_records": len(records)}
    for name in ("rewrite", "paraphrase"):
        if name not in after:
            continue
        figures[f"{name}_exact"] = _fraction(after[name]["exact"])
        figures[f"{name}_score"] = _fraction(n > t for n, t in zip(after[name]["new"], after[name]["true"]))
        if before is not None:
            figures[f"{name}_exact_before"] = _fraction(before[name]["exact"])
            figures[f"{name}_score_before"] = _fraction(
                n > t for n, t in zip(before[name]["new"], before[name]["true"])
            )
    figures["num_paraphrases"] = len(groups["paraphrase"])
    figures["num_neighbourhood"] = len(groups["neighbourhood"])
    if "neighbourhood" in after and before is not None:
        a, b = after["neighbourhood"], before["neighbourhood"]
        figures["neighbourhood_exact"] = _fraction(x == y for x, y in zip(a["answers"], b["answers"]))
        figures["neighbourhood_score"] = _fraction(
            (tn > nn) == (tb > nb) for tn, nn, tb, nb in zip(a["true"], a["new"], b["true"], b["new"])
        )
        figures["neighbourhood_new_exact"] = _fraction(a["exact"])
        figures["neighbourhood_new_exact_before"] = _fraction(b["exact"])
    per_record = []
    for index, record in enumerate(records):
        entry = {"rewrite_prompt": record.rewrite_prompt, "target_true": record.target_true}
        entry["target_new"] = record.target_new
        entry["rewrite_log_prob_new"] = after["rewrite"]["new"][index]
        entry["rewrite_log_prob_true"] = after["rewrite"]["true"][index]
        entry["rewrite_exact"] = after["rewrite"]["exact"][index]
        per_record.append(entry)
    figures["per_record"] = per_record
    return figures


@torch.no_grad()
def scope_distances(model, processor, queries: list[str]) -> list[float]:
    """Each query's smallest cosine distance to the latents stored in `model`'s episodic memory: what scope
    detection compares with `config.scope_threshold` (a query is in scope when its distance is at most that)."""
    state = model.memory_state
    if state is None or state.size == 0:
        raise ValueError("The memory is empty: write the facts first, then measure the queries' distances.")
    q = model.encode_texts(queries, processor)
    return nearest_distance(q[None], state.latents[None].to(q.device))[0].tolist()


def calibrate_scope_threshold(model, processor, records, *, neighbour_rate: float = 0.05) -> dict:
    """The scope threshold that keeps at most `neighbour_rate` of the neighbourhood prompts (other subjects) in
    scope once the records' rewrites are written, and the shares of rewrite and paraphrase prompts it keeps in scope.

    Calibrate on records of your own that the evaluation does not use (e.g.
    `counterfact_records(..., held_out=False)`, about training subjects). The memory is written afresh and reset
    afterwards; the model's config is not changed. Returns a dict: `scope_threshold`, `rewrite_in_scope`,
    `paraphrase_in_scope`, `neighbourhood_in_scope`, `num_records`.
    """
    from .._validation import check_range

    check_range("neighbour_rate", neighbour_rate, ge=0, le=1)
    records = list(records)
    if not records:
        raise ValueError("records is empty.")
    neighbours = [p for r in records for p in r.neighbourhood_prompts]
    if not neighbours:
        raise ValueError("The records have no neighbourhood prompts to calibrate against.")
    model.reset_memory()
    try:
        model.write_memory([r.rewrite_text for r in records], processor=processor)
        distances = {
            "rewrite": scope_distances(model, processor, [r.rewrite_prompt for r in records]),
            "paraphrase": scope_distances(model, processor, [p for r in records for p in r.paraphrase_prompts]),
            "neighbourhood": scope_distances(model, processor, neighbours),
        }
    finally:
        model.reset_memory()
    ordered = sorted(distances["neighbourhood"])
    allowed = int(neighbour_rate * len(ordered))
    threshold = max(0.0, ordered[allowed] - 1e-6) if allowed < len(ordered) else 2.0
    result = {"scope_threshold": threshold, "num_records": len(records)}
    for name, values in distances.items():
        if values:
            result[f"{name}_in_scope"] = sum(d <= threshold for d in values) / len(values)
    return result
