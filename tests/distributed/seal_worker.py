"""Worker of test_distributed.py: one SEAL loss + backward on this process's share of a fixed global batch.

Run under `torchrun --nproc_per_node 2 seal_worker.py OUT [fsdp]` (the model wrapped in DDP, or sharded with FSDP2's
`fully_shard`, on gloo), or imported and called with `world_size=1`. For `algorithm="penalty"` (full fine-tuning)
and `algorithm="full"` (LoRA + the auxiliary adapter) it writes `OUT/<algorithm>-rank<r>.safetensors` with this
rank's loss and every parameter gradient (DDP / FSDP average them over the ranks).
"""

import os
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from hf_ext.seal import SEALConfig, SEALTrainer
from hf_ext.serialization import save_tensors
from hf_ext.testing.seal import aligned_model_dir, planted_datasets


GLOBAL_BATCH = 8
ALGORITHMS = ("penalty", "full")


def make_trainer(out_dir, algorithm, world_size):
    from peft import LoraConfig

    safe, finetune = planted_datasets()
    args = SEALConfig(
        str(Path(out_dir) / f"trainer-{algorithm}"),
        algorithm=algorithm,
        per_device_train_batch_size=GLOBAL_BATCH // world_size,
        upper_level_weight=0.7,
        seed=0,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
        dataloader_pin_memory=False,
    )
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM") if algorithm == "full" else None
    trainer = SEALTrainer(
        AutoModelForCausalLM.from_pretrained(aligned_model_dir()),
        args=args,
        train_dataset=finetune.select(range(2 * GLOBAL_BATCH)),
        safe_dataset=safe,
        peft_config=lora,
    )
    if algorithm == "full":
        # Both adapters start at zero (LoRA's B): make them differ, so that each term has a gradient of its own.
        generator = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for name, parameter in trainer.model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return trainer


def run(out_dir, algorithm, world_size=None, fsdp=False):
    size = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    trainer = make_trainer(out_dir, algorithm, size)
    rank = trainer.args.process_index
    share = GLOBAL_BATCH // size
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(rank * share, (rank + 1) * share)])
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        base = trainer.model.get_base_model() if algorithm == "full" else trainer.model
        for layer in base.model.layers:
            fully_shard(layer)
        model = fully_shard(trainer.model)
    else:
        model = trainer.accelerator.prepare_model(trainer.model) if size > 1 else trainer.model
    model.train()
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    tensors = {"loss": loss.detach().reshape(1)}
    for name, parameter in trainer.model.named_parameters():
        if parameter.grad is not None:
            grad = parameter.grad
            tensors[f"grad.{name}"] = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
    save_tensors(Path(out_dir) / f"{algorithm}-rank{rank}.safetensors", tensors)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    out_dir = sys.argv[1]
    fsdp = len(sys.argv) > 2 and sys.argv[2] == "fsdp"
    for algorithm in ALGORITHMS:
        run(out_dir, algorithm, fsdp=fsdp)
