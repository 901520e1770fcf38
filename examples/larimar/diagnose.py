"""Why does the latent natural recipe not make the frozen SmolLM2 say the object? (issue 16, diagnosis)

Trains only the memory path of a fresh `LATENT_NATURAL_RECIPE` Larimar, the paper's latent read-out (latent
projection, `prefix_projection`: one KV slot per decoder layer, `embedding_projection`: an offset added to every token embedding) on the autoencoder term
alone, CE(object | e(fact)): the decoder is conditioned on each fact's *own* latent, no memory read, so this is the
most the conditioning can carry. Frozen encoder and decoder, `mask_empty_slot`, loss on the object's tokens only,
as `train_real_larimar` does for `LATENT_NATURAL_RECIPE`.

- `overfit`: one fixed episode of 32 training facts, `--steps` steps at `--lr`; exact match (every object token is
  the arg-max, teacher-forced) of those facts given their own latent.
- `generalise`: varied training episodes, then exact match of 32 CounterFact rewrites (objects never in training)
  given their own latent.
- `probe`: no training. Is the object linearly readable from the frozen MiniLM embedding? A ridge regression
  from the latent of a fact (or of the fact minus its prompt) to the decoder's input embedding of the object's
  first token, fitted on `--steps` episodes of training facts; accuracy of picking the right first token among
  every object's, on held-out facts with training objects and on the CounterFact rewrites (unseen objects).
- `context`: no training. The frozen decoder given the rewrite sentences as plain text before the prompt (its own
  fact, or all 32 rewrites): teacher-forced exact match of the new object on the rewrite and paraphrase prompts.
- `--ablate kv` keeps the KV slot at zero (embedding offset only); `--ablate embedding` keeps the offset at zero
  (KV slot only).

```bash
OMP_NUM_THREADS=1 python -m examples.larimar.diagnose overfit --lr 1e-2 --steps 40 --out diag.jsonl
```
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from examples.larimar.model import LATENT_NATURAL_RECIPE, build_real_larimar, label_answers_only
from hf_ext.testing.larimar_natural import counterfact_records, natural_training_episode


def answer_batch(processor, facts):
    """The training batch of `facts` with only the object's tokens labelled (no prompt, no EOS), as
    `train_real_larimar` builds it for `LATENT_NATURAL_RECIPE`."""
    batch = processor.episode([f.text for f in facts])
    return label_answers_only(batch, processor, [f.prompt for f in facts], eos=False)


def own_latent_loss(model, batch, latent=None):
    """Per-token loss, per-fact exact match and mean log p(object) with each fact's own latent (or `latent`)."""
    larimar = model.model
    if latent is None:
        latent = larimar.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
    output = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], memory_latent=latent, use_cache=False
    )
    logits = output.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    token_log_p = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    loss = -(token_log_p * mask).sum() / mask.sum()
    hit = (logits.argmax(-1) == labels) | ~mask
    exact = hit.all(-1).float().mean().item()
    log_p = (token_log_p * mask).sum(-1).mean().item()
    return loss, exact, log_p, latent


def trainable_parts(model, ablate: str):
    larimar = model.model
    parts = [*larimar.latent_projection.parameters()]
    if ablate != "kv":
        parts += [*larimar.prefix_projection.parameters()]
    if ablate != "embedding":
        parts += [*larimar.embedding_projection.parameters()]
    return parts


@torch.no_grad()
def evaluate(model, facts) -> dict:
    model.eval()
    batch = answer_batch(PROCESSOR, facts)
    loss, exact, log_p, latent = own_latent_loss(model, batch)
    zero_loss, zero_exact, zero_log_p, _ = own_latent_loss(model, batch, torch.zeros_like(latent))
    larimar = model.model
    slot = larimar.prefix_projection(latent).norm(dim=-1).mean().item()
    offset = larimar.embedding_projection(latent).norm(dim=-1).mean().item()
    token = larimar.decoder.get_input_embeddings().weight.norm(dim=-1).mean().item()
    return {
        "own_latent": {"loss": round(loss.item(), 3), "exact": exact, "log_p": round(log_p, 2)},
        "zero_latent": {"loss": round(zero_loss.item(), 3), "exact": zero_exact, "log_p": round(zero_log_p, 2)},
        "norms": {"slot_all_layers": round(slot, 3), "offset": round(offset, 3), "token_embedding": round(token, 3)},
    }


def train(model, episodes, lr: float, ablate: str, log_every: int = 5) -> list[float]:
    """AdamW at a constant `lr` on the own-latent loss, one step per episode; returns the losses."""
    parameters = trainable_parts(model, ablate)
    model.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    losses = []
    for step, facts in enumerate(episodes):
        model.train()
        model.model.encoder.eval()
        loss, exact, _, _ = own_latent_loss(model, answer_batch(PROCESSOR, facts))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 3))
        if step % log_every == 0 or step == len(episodes) - 1:
            print(f"step {step:3d} loss {loss.item():.3f} exact(train batch) {exact:.2f}", flush=True)
    return losses


@torch.no_grad()
def probe(model, train_facts, tests: dict, ridge: float = 1e-2) -> dict:
    """Ridge probe from the encoder's latent to the object's first-token decoder embedding (see the docstring)."""
    model.eval()
    larimar, tokenizer = model.model, PROCESSOR.decoder_tokenizer
    table = larimar.decoder.get_input_embeddings().weight

    def first_token(word: str) -> int:
        return tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]

    def latents(texts):
        inputs = PROCESSOR.encode_memory(texts)
        return torch.cat(
            [
                larimar.encode(inputs["encoder_input_ids"][i : i + 256], inputs["encoder_attention_mask"][i : i + 256])
                for i in range(0, len(texts), 256)
            ]
        )

    everything = [*train_facts, *(f for facts in tests.values() for f in facts)]
    candidates = torch.tensor(sorted({first_token(f.object) for f in everything}))
    result = {"num_train": len(train_facts), "num_candidates": len(candidates)}
    for name, delta in (("fact", False), ("fact_minus_prompt", True)):

        def features(facts, delta=delta):
            x = latents([f.text for f in facts])
            return x - latents([f.prompt for f in facts]) if delta else x

        x = features(train_facts)
        mean = x.mean(0)
        x = x - mean
        y = table[torch.tensor([first_token(f.object) for f in train_facts])]
        weight = torch.linalg.solve(x.T @ x + ridge * len(x) * torch.eye(x.shape[1]), x.T @ y)
        for test, facts in {"train": train_facts, **tests}.items():
            predicted = (features(facts) - mean) @ weight @ table[candidates].T
            picked = candidates[predicted.argmax(-1)]
            truth = torch.tensor([first_token(f.object) for f in facts])
            result[f"{name}/{test}"] = round((picked == truth).float().mean().item(), 3)

    # A vocabulary-wide alignment instead: fit on single words of the decoder's vocabulary (every object's first
    # token left out), then read the objects from the latent of the object word alone and of fact minus prompt.
    held = set(candidates.tolist())
    words = [
        (token[1:], index)
        for token, index in tokenizer.get_vocab().items()
        if token.startswith("\u0120") and token[1:].isalpha() and len(token) > 3 and index not in held
    ]
    x = latents([word for word, _ in words])
    mean = x.mean(0)
    x = x - mean
    y = table[torch.tensor([index for _, index in words])]
    weight = torch.linalg.solve(x.T @ x + ridge * len(x) * torch.eye(x.shape[1]), x.T @ y)
    result["vocabulary_fit_words"] = len(words)
    for test, facts in {"held_out_facts": tests["held_out_facts"], "unseen_objects": tests["unseen_objects"]}.items():
        truth = torch.tensor([first_token(f.object) for f in facts])
        for name, feats in (
            ("object_word", latents([f.object for f in facts])),
            ("fact_minus_prompt", latents([f.text for f in facts]) - latents([f.prompt for f in facts])),
        ):
            picked = candidates[((feats - mean) @ weight @ table[candidates].T).argmax(-1)]
            result[f"vocabulary_fit/{name}/{test}"] = round((picked == truth).float().mean().item(), 3)
    return result


@torch.no_grad()
def in_context(model, records) -> dict:
    """Exact match and P(new) > P(old) of the frozen decoder (zero latent: exactly SmolLM2) with the facts as text."""
    from hf_ext.larimar.evaluation import target_scores

    model.eval()
    everything = " ".join(f"{r.rewrite_text}." for r in records)
    cases = {
        "no_context/rewrite": [(r.rewrite_prompt, r) for r in records],
        "own_fact/rewrite": [(f"{r.rewrite_text}. {r.rewrite_prompt}", r) for r in records],
        "own_fact/paraphrase": [(f"{r.rewrite_text}. {p}", r) for r in records for p in r.paraphrase_prompts],
        "all_32_facts/rewrite": [(f"{everything} {r.rewrite_prompt}", r) for r in records],
        "all_32_facts/paraphrase": [(f"{everything} {p}", r) for r in records for p in r.paraphrase_prompts],
    }
    result = {}
    for name, items in cases.items():
        prompts = [prompt for prompt, _ in items]
        new, exact = target_scores(model, PROCESSOR, prompts, [r.target_new for _, r in items], read_memory=False)
        old, _ = target_scores(model, PROCESSOR, prompts, [r.target_true for _, r in items], read_memory=False)
        result[name] = {
            "exact": round(sum(exact) / len(exact), 3),
            "new_more_likely": round(sum(n > o for n, o in zip(new, old)) / len(new), 3),
            "prompts": len(prompts),
        }
    return result


PROCESSOR = None


def main(argv=None) -> int:
    global PROCESSOR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["overfit", "generalise", "probe", "context"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--ablate", choices=["none", "kv", "embedding"], default="none")
    parser.add_argument("--episode-size", type=int, default=32)
    parser.add_argument("--out", default="larimar_diagnosis.jsonl")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, PROCESSOR = build_real_larimar(LATENT_NATURAL_RECIPE)
    rng = random.Random(0)
    fixed = natural_training_episode(rng, args.episode_size)
    if args.experiment == "context":
        result = {"args": vars(args), "context": in_context(model, counterfact_records(32))}
        print(json.dumps(result, indent=1))
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
        return 0
    if args.experiment == "probe":
        train_facts = [f for _ in range(args.steps) for f in natural_training_episode(rng, args.episode_size)]
        tests = {"held_out_facts": fixed, "unseen_objects": counterfact_records(32)}
        result = {"args": vars(args), "probe": probe(model, train_facts, tests)}
        print(json.dumps(result, indent=1))
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
        return 0
    if args.experiment == "overfit":
        episodes = [fixed] * args.steps
    else:
        episodes = [natural_training_episode(rng, args.episode_size) for _ in range(args.steps)]
    unseen = counterfact_records(32)
    cpu = time.process_time()
    # The latent centre is a running mean of training batches: set it once, on the first episode, before measuring.
    model.train()
    with torch.no_grad():
        batch = answer_batch(PROCESSOR, episodes[0])
        model.model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
    result = {"args": vars(args), "before": {"train_facts": evaluate(model, fixed)}}
    losses = train(model, episodes, args.lr, args.ablate)
    result["losses"] = losses
    result["after"] = {"train_facts": evaluate(model, fixed), "unseen_objects": evaluate(model, unseen)}
    result["cpu_seconds"] = round(time.process_time() - cpu, 1)
    print(json.dumps({k: v for k, v in result.items() if k != "losses"}, indent=1))
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
