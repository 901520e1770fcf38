"""Measuring what a Larimar recalls: exact-match answers to fact prompts."""

from __future__ import annotations

import torch


__all__ = ["DECODER_LORA_TARGETS", "answer", "exact_match_recall", "lora_edit"]


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
