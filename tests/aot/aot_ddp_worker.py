"""Worker of test_aot_distributed.py: one AOT loss + backward on this process's share of a fixed global batch.

Run under `accelerate launch --cpu --num_processes 2 aot_ddp_worker.py MODEL OUT` (each rank takes its share of the
global batch, the model wrapped in DDP on gloo), or imported and called with `world_size=1` (the whole batch, one
process). Writes `OUT/<variant>-<sort>-rank<r>.safetensors` with the loss and every parameter gradient.
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


def reference_model(model_path):
    model = AutoModelForCausalLM.from_pretrained(model_path)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def datasets():
    pairs = synthetic_preference_dataset(GLOBAL_BATCH, seed=11)
    rows = [
        {"prompt": p["prompt"], "completion": p["chosen"] if label else p["rejected"], "label": label}
        for p, label in zip(pairs, UNPAIRED_LABELS)
    ]
    return {"paired": pairs, "unpaired": Dataset.from_list(rows)}


def run(model_path, out_dir, variant, world_size=None, sorts=(True, False)):
    dataset = datasets()[variant]
    trainer = AOTTrainer(
        str(model_path),
        ref_model=reference_model(model_path),
        args=AOTConfig(
            str(Path(out_dir) / "trainer"),
            aot_variant=variant,
            aot_cost="logistic",
            beta=0.5,
            use_cpu=True,
            per_device_train_batch_size=GLOBAL_BATCH,  # no warning: this run sorts at least 8
            gradient_checkpointing=False,
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
        ),
        train_dataset=dataset,
    )
    rank, size = trainer.accelerator.process_index, world_size or trainer.accelerator.num_processes
    share = GLOBAL_BATCH // size
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(rank * share, (rank + 1) * share)])
    model = trainer.accelerator.prepare_model(trainer.model) if size > 1 else trainer.model
    model.train()
    for global_sort in sorts:
        trainer.args.aot_global_sort = global_sort
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        tensors = {"loss": loss.detach().reshape(1)}
        tensors.update({f"grad.{n}": p.grad for n, p in trainer.model.named_parameters() if p.grad is not None})
        tag = f"{variant}-{'global' if global_sort else 'local'}-rank{rank}"
        save_tensors(Path(out_dir) / f"{tag}.safetensors", tensors)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    model_path, out_dir = sys.argv[1], sys.argv[2]
    for variant in ("paired", "unpaired"):
        run(model_path, out_dir, variant)
