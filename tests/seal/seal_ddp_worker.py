"""Run by tests/seal/test_seal_distributed.py under `torch.distributed.run` (2 CPU processes, gloo).

Writes, per rank, the examples this rank fed to the ranker at every step, and (rank 0) the gathered scores.
"""

import json
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

from hf_ext.seal import SEALConfig, SEALTrainer
from hf_ext.testing.seal import aligned_model_dir, planted_datasets


DDP_ARGS = dict(
    num_train_epochs=2,
    learning_rate=1e-3,
    ranker_optimizer="sgd",
    ranker_learning_rate=1.0,
    upper_level_weight=0.7,
    upper_level_weight_decay=0.3,
    seed=0,
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    save_strategy="no",
    logging_steps=100,
)
NUM_EXAMPLES = 64


class RecordingSEALTrainer(SEALTrainer):
    """Records which examples this rank contributes at each optimizer step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.contributions = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.contributions.append([self.state.global_step, inputs["seal_index"].tolist()])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def make_trainer(output_dir, per_device_train_batch_size, **extra):
    safe, finetune = planted_datasets()
    args = SEALConfig(str(output_dir), per_device_train_batch_size=per_device_train_batch_size, **DDP_ARGS, **extra)
    return RecordingSEALTrainer(
        AutoModelForCausalLM.from_pretrained(aligned_model_dir()),
        args=args,
        train_dataset=finetune.select(range(NUM_EXAMPLES)),
        safe_dataset=safe,
    )


def main(output_dir: str) -> None:
    output_dir = Path(output_dir)
    trainer = make_trainer(output_dir, per_device_train_batch_size=8, ddp_backend="gloo")
    trainer.train()
    rank = trainer.args.process_index
    (output_dir / f"contributions-{rank}.json").write_text(json.dumps(trainer.contributions))
    if trainer.args.world_size != 2:
        raise SystemExit(f"expected 2 processes, got {trainer.args.world_size}")
    if rank == 0:
        trainer.scores().save_pretrained(output_dir / "scores")


if __name__ == "__main__":
    main(sys.argv[1])
