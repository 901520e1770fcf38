"""Worker of test_distributed.py: one AOT loss + backward on this process's share of a fixed global batch.

Run under `torchrun --nproc_per_node 2 aot_worker.py MODEL OUT [fsdp]` (the model wrapped in DDP, or sharded with FSDP2's
`fully_shard`, on gloo), or imported and called with `world_size=1` (the whole batch, one process). For every
variant (paired, unpaired) and reference (live, precomputed) it writes `OUT/<variant>-<reference>-rank<r>.safetensors`
with the loss, the reference log-probabilities the batch used and every parameter gradient.
"""

import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from hf_ext.aot import AOTConfig, AOTTrainer
from hf_ext.serialization import save_tensors
from hf_ext.testing.aot import synthetic_preference_dataset


GLOBAL_BATCH = 8
UNPAIRED_LABELS = [True, True, True, False, True, True, False, False]  # rank 0: 3 / 1, rank 1: 2 / 2; global 5 / 3
CASES = [(variant, precompute) for variant in ("paired", "unpaired") for precompute in (False, True)]


def reference_model(model_path):
    model = AutoModelForCausalLM.from_pretrained(model_path)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def dataset(variant):
    pairs = synthetic_preference_dataset(GLOBAL_BATCH, seed=11)
    if variant == "paired":
        return pairs
    rows = [
        {"prompt": p["prompt"], "completion": p["chosen"] if label else p["rejected"], "label": label}
        for p, label in zip(pairs, UNPAIRED_LABELS)
    ]
    return Dataset.from_list(rows)


def tag(variant, precompute, rank):
    return f"{variant}-{'precomputed' if precompute else 'live'}-rank{rank}"


def run(model_path, out_dir, variant, precompute, world_size=None, fsdp=False):
    trainer = AOTTrainer(
        str(model_path),
        ref_model=reference_model(model_path),
        args=AOTConfig(
            str(Path(out_dir) / "trainer"),
            aot_variant=variant,
            aot_cost="logistic",
            aot_global_sort=True,
            beta=0.5,
            use_cpu=True,
            precompute_ref_log_probs=precompute,
            per_device_train_batch_size=GLOBAL_BATCH,  # no warning: this run sorts at least 8
            gradient_checkpointing=False,
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
        ),
        train_dataset=dataset(variant),
    )
    rank, size = trainer.accelerator.process_index, world_size or trainer.accelerator.num_processes
    share = GLOBAL_BATCH // size
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(rank * share, (rank + 1) * share)])
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in trainer.model.model.layers:
            fully_shard(layer)
        model = fully_shard(trainer.model)
    else:
        model = trainer.accelerator.prepare_model(trainer.model) if size > 1 else trainer.model
    model.train()
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    tensors = {"loss": loss.detach().reshape(1), "ref_logps": trainer._reference_logps(batch).detach()}
    for name, parameter in trainer.model.named_parameters():
        if parameter.grad is not None:
            grad = parameter.grad
            tensors[f"grad.{name}"] = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
    save_tensors(Path(out_dir) / f"{tag(variant, precompute, rank)}.safetensors", tensors)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    model_path, out_dir = sys.argv[1], sys.argv[2]
    fsdp = len(sys.argv) > 3 and sys.argv[3] == "fsdp"
    for variant, precompute in CASES:
        run(model_path, out_dir, variant, precompute, fsdp=fsdp)
