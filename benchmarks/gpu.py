"""The GPU acceptance run (`make test-gpu`): every method in bfloat16 with bitsandbytes 4-bit CUDA kernels and SDPA
attention, on one GPU, in a few minutes. Writes `benchmarks/results/gpu.md`.

Checks (each a pass / fail line with its measured figure):

- SASA: on a 4-bit bf16 model, the processor's tree-masked candidate margins equal separate full forwards.
- Larimar: bf16 training steps (autocast) with finite losses, then a written memory that is non-zero and finite.
- AOT and SEAL: QLoRA steps (4-bit base, LoRA adapters, `bf16=True`) with finite losses and non-zero adapter gradients.
- MergeAlign: a 4-bit sweep candidate merged on the GPU equals the written merge loaded in 4-bit.
- FSDP2 (`fully_shard`) at world size 1 (NCCL): the sharded model's loss and gradients equal the plain model's.

On a machine without CUDA it says so and exits 0. Exits 1 when a check fails.
"""

from __future__ import annotations

import copy
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch


RESULTS = Path(__file__).parent / "results" / "gpu.md"
DTYPE = torch.bfloat16
ATTN = "sdpa"


def _lora(**kwargs):
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], **kwargs)


def _adapter_gradients(model) -> tuple[int, int]:
    """(adapter parameters with a non-zero finite gradient, adapter parameters)."""
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    good = sum(int(g is not None and bool(torch.isfinite(g).all()) and g.abs().max() > 0) for g in grads)
    return good, len(grads)


def _train_then_backward_once(trainer, batch_size: int = 8):
    """Train; then one more loss on the first rows, backward: `(logged losses, that loss, adapter tensors with a
    non-zero gradient, adapter tensors)`."""
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rows = [trainer.train_dataset[i] for i in range(batch_size)]
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return (losses, loss, *_adapter_gradients(trainer.model))


def _4bit(path, **kwargs):
    from hf_ext.quantization import load_quantized

    return load_quantized(path, bits=4, compute_dtype=DTYPE, attn_implementation=ATTN, **kwargs)


def check_sasa(work: Path) -> tuple[bool, str]:
    from transformers import AutoTokenizer

    from hf_ext.sasa import SASALogitsProcessor, SASAProbe
    from hf_ext.sasa.hidden_states import positions_from_mask
    from hf_ext.testing import tiny_model_dir

    path = tiny_model_dir("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = _4bit(path).eval()
    good = ["Thank you, that was kind.", "We walked along the river.", "A cup of tea and a book."]
    bad = ["You are a stupid idiot.", "I hate you and your face.", "Shut up, loser."]
    probe = SASAProbe.fit(model, tokenizer, good, bad, show_progress=False)
    batch = tokenizer(["The weather today is", "Hi", "Once upon a time there was"], return_tensors="pt", padding=True)
    batch = batch.to(model.device)
    sasa = SASALogitsProcessor(model, probe, beta=5.0, record_trace=True)
    torch.manual_seed(0)
    out = model.generate(**batch, do_sample=True, max_new_tokens=6, logits_processor=[sasa])
    worst, spread = 0.0, 0.0
    prompt_mask = batch["attention_mask"]
    for step in sasa.trace[:4]:
        length = step.input_length
        ones = torch.ones(len(prompt_mask), length - prompt_mask.shape[1], dtype=torch.long, device=model.device)
        mask = torch.cat([prompt_mask, ones], 1)
        ids = step.candidate_ids.to(model.device)
        rows, k = ids.shape
        seqs = torch.cat([out[:, :length].repeat_interleave(k, 0), ids.reshape(-1, 1)], dim=1)
        full_mask = torch.cat(
            [mask.repeat_interleave(k, 0), torch.ones(rows * k, 1, dtype=torch.long, device=ids.device)], 1
        )
        with torch.no_grad():
            hidden = model(
                input_ids=seqs,
                attention_mask=full_mask,
                position_ids=positions_from_mask(full_mask),
                output_hidden_states=True,
            ).hidden_states[probe.layer][:, -1]
        expected = probe.margin(hidden).view(rows, k).cpu()
        valid = step.valid
        worst = max(worst, float((expected - step.margins).abs()[valid].max()))
        spread = max(spread, float(expected[valid].std()))
    # bf16 activations: one forward of K candidates against K forwards differ by bf16 rounding of the hidden states
    # (~2^-8 relative); 5% of the margins' spread across candidates keeps every ranking of the tilt.
    ok = worst <= 0.05 * spread + 1e-3 and sasa.cache_usage["generate"] > 0
    return (
        ok,
        f"max |tree-mask margin - separate forward| = {worst:.2e} (margin spread {spread:.3f}); cache {sasa.cache_usage}",
    )


def check_larimar(work: Path) -> tuple[bool, str]:
    from transformers import AutoModelForCausalLM, AutoProcessor

    from hf_ext.larimar.training import LarimarEpisodeCollator
    from hf_ext.testing.larimar import tiny_larimar_dir

    path = tiny_larimar_dir(progress=False)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=ATTN).to("cuda")
    processor = AutoProcessor.from_pretrained(path)
    texts = [f"Fact {i}: the capital of country {i} is city {i * 7 % 13}." for i in range(8)]
    collator = LarimarEpisodeCollator(processor, prompt_field=None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    losses = []
    for _ in range(3):
        batch = {
            k: v.to("cuda") if torch.is_tensor(v) else v for k, v in collator([{"text": t} for t in texts]).items()
        }
        with torch.autocast("cuda", dtype=DTYPE):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    model.eval()
    model.reset_memory()
    with torch.autocast("cuda", dtype=DTYPE):
        model.write_memory(texts, processor)
    memory = model.memory_state.memory.float()
    norm = float(memory.norm())
    ok = (
        all(map(lambda x: x == x and abs(x) != float("inf"), losses))
        and norm > 0
        and bool(torch.isfinite(memory).all())
    )
    return ok, f"bf16 step losses {[round(x, 4) for x in losses]}; memory norm after a bf16 write {norm:.3f}"


def check_aot(work: Path) -> tuple[bool, str]:
    from transformers import AutoTokenizer

    from hf_ext.aot import AOTConfig, AOTTrainer
    from hf_ext.testing import tiny_model_dir
    from hf_ext.testing.aot import synthetic_preference_dataset

    path = tiny_model_dir("tiny-llama")
    args = AOTConfig(
        str(work / "aot"),
        bf16=True,
        max_steps=3,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=True,
    )
    trainer = AOTTrainer(
        _4bit(path, prepare_for_training=True),
        args=args,
        train_dataset=synthetic_preference_dataset(32, seed=0),
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=_lora(task_type="CAUSAL_LM"),
    )
    losses, loss, good, total = _train_then_backward_once(trainer)
    ok = losses and all(torch.isfinite(torch.tensor(losses))) and torch.isfinite(loss) and good == total > 0
    return bool(
        ok
    ), f"QLoRA losses {[round(x, 4) for x in losses]}; {good}/{total} adapter tensors with non-zero gradient"


def check_seal(work: Path) -> tuple[bool, str]:
    from hf_ext.seal import SEALConfig, SEALTrainer
    from hf_ext.testing.seal import aligned_model_dir, planted_datasets

    safe, finetune = planted_datasets()
    path = aligned_model_dir()
    results = []
    ok = True
    for algorithm in ("penalty", "full"):
        args = SEALConfig(
            str(work / f"seal-{algorithm}"),
            algorithm=algorithm,
            bf16=True,
            max_steps=3,
            per_device_train_batch_size=8,
            report_to="none",
            disable_tqdm=True,
            save_strategy="no",
            logging_steps=1,
        )
        trainer = SEALTrainer(
            _4bit(path, prepare_for_training=True),
            args=args,
            train_dataset=finetune.select(range(48)),
            safe_dataset=safe,
            peft_config=_lora(task_type="CAUSAL_LM"),
        )
        losses, _, good, total = _train_then_backward_once(trainer)
        ok &= bool(losses) and bool(torch.isfinite(torch.tensor(losses)).all()) and good == total > 0
        ok &= bool(torch.isfinite(trainer.ranker_logits).all())
        results.append(
            f"{algorithm}: losses {[round(x, 4) for x in losses]}, {good}/{total} adapter gradients non-zero"
        )
    return ok, "; ".join(results)


def check_mergealign(work: Path) -> tuple[bool, str]:
    import bitsandbytes as bnb
    import yaml

    from hf_ext.mergealign import merge
    from hf_ext.mergealign.sweep import CandidateModel
    from hf_ext.mergealign.weights import TaskVectors
    from hf_ext.testing import build_tiny_causal_lm, build_tokenizer

    tokenizer = build_tokenizer()
    base = build_tiny_causal_lm("llama", tokenizer=tokenizer, num_layers=3)
    paths = {}
    for name, seed in (("base", None), ("domain", 1), ("aligned", 2)):
        model = copy.deepcopy(base)
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
        model.to(DTYPE).save_pretrained(work / name)
        tokenizer.save_pretrained(work / name)
        paths[name] = work / name
    config = {
        "merge_method": "mergealign",
        "base_model": str(paths["base"]),
        "models": [
            {"model": str(paths["domain"]), "parameters": {"role": "domain"}},
            {"model": str(paths["aligned"]), "parameters": {"role": "alignment"}},
        ],
        "parameters": {"alpha": 0.6, "scale": 1.2},
        "dtype": "bfloat16",
    }
    (work / "merge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    merge(work / "merge.yaml", work / "merged", copy_tokenizer=False, quiet=True, report=False)
    reference = _4bit(work / "merged", device_map={"": 0})
    candidate = CandidateModel(
        TaskVectors(paths["base"], paths["domain"], paths["aligned"]), load_in_4bit=True, device="cuda:0"
    )
    candidate.set_weights(0.2, 1.0)
    candidate.set_weights(0.6, 1.2)
    layers = [n for n, m in candidate.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    same = 0
    for name in layers:
        ours, theirs = candidate.model.get_submodule(name).weight, reference.get_submodule(name).weight
        same += int(torch.equal(ours.data, theirs.data))
    inputs = torch.tensor([[1, 17, 300, 42, 9]], device="cuda")
    with torch.no_grad():
        diff = float((candidate.model(inputs).logits.float() - reference(inputs).logits.float()).abs().max())
    # Merged in float32 on the GPU vs on the CPU: a fused multiply-add may round once instead of twice; after the cast
    # to bf16 and 4-bit quantization a code may flip for a value on a boundary, so a handful of layers may differ.
    ok = same >= len(layers) - 2 and diff <= 0.05
    return ok, f"{same}/{len(layers)} 4-bit layers byte-identical to the written merge; max |logit diff| {diff:.2e}"


def check_fsdp(work: Path) -> tuple[bool, str]:
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from transformers import AutoModelForCausalLM

    from hf_ext.testing import tiny_model_dir

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    if not dist.is_initialized():
        dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        path = tiny_model_dir("tiny-llama")
        plain = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPE, attn_implementation=ATTN).to("cuda")
        sharded = copy.deepcopy(plain)
        policy = MixedPrecisionPolicy(param_dtype=DTYPE, reduce_dtype=torch.float32)
        for layer in sharded.model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(sharded, mp_policy=policy)
        ids = torch.randint(10, 1000, (4, 32), generator=torch.Generator().manual_seed(0)).to("cuda")
        losses = []
        for model in (plain, sharded):
            model.train()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            losses.append(float(loss))
        worst = 0.0
        for p, q in zip(plain.parameters(), sharded.parameters()):
            grad = q.grad.full_tensor() if hasattr(q.grad, "full_tensor") else q.grad
            worst = max(
                worst, float((grad.float() - p.grad.float()).abs().max() / (p.grad.float().abs().max() + 1e-12))
            )
        ok = abs(losses[0] - losses[1]) <= 1e-2 and worst <= 0.05
        return (
            ok,
            f"loss plain {losses[0]:.5f} vs fully_shard {losses[1]:.5f}; max relative gradient difference {worst:.2e}",
        )
    finally:
        dist.destroy_process_group()


CHECKS = [
    ("SASA 4-bit bf16 tree-mask margins", check_sasa),
    ("Larimar bf16 training + memory", check_larimar),
    ("AOT QLoRA bf16", check_aot),
    ("SEAL QLoRA bf16 (penalty, full)", check_seal),
    ("MergeAlign 4-bit sweep point = written merge", check_mergealign),
    ("FSDP2 world size 1 (NCCL, bf16)", check_fsdp),
]


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu.py: no CUDA GPU is present; nothing to run (the GPU acceptance run needs one).")
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")
    rows, failed = [], 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for title, check in CHECKS:
            work = Path(tmp) / check.__name__
            work.mkdir()
            t0 = time.perf_counter()
            try:
                ok, detail = check(work)
            except Exception as error:  # one failing method must not hide the others' results
                ok, detail = False, f"error: {type(error).__name__}: {error}".replace("\n", " ")[:400]
                traceback.print_exc()
            failed += not ok
            seconds = time.perf_counter() - t0
            rows.append(f"| {title} | {'pass' if ok else '**FAIL**'} | {seconds:.1f} | {detail} |")
            print(f"[{'pass' if ok else 'FAIL'}] {title} ({seconds:.1f} s): {detail}", flush=True)
            torch.cuda.empty_cache()
    import bitsandbytes
    import transformers

    lines = [
        "# GPU acceptance run",
        "",
        f"`make test-gpu` on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"transformers {transformers.__version__}, bitsandbytes {bitsandbytes.__version__}, Python "
        f"{platform.python_version()}): bf16, 4-bit NF4 CUDA kernels, SDPA attention. "
        f"Total {time.perf_counter() - start:.0f} s.",
        "",
        "| check | result | seconds | measured |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
