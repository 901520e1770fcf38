"""Worker of test_larimar_distributed.py: two Larimar training steps on this process's share of a fixed global batch.

Run under `torchrun --nproc_per_node 2 larimar_worker.py OUT WRAPPER` (gloo; each rank takes one of the two episodes,
the model wrapped in DDP, or sharded with FSDP2's `fully_shard`), or imported and called with `world_size=1` (both
episodes, one process). The encoder is trainable and mean-pooled (its pooler unused) and DDP runs with
`find_unused_parameters=False` and activation checkpointing: the setting where an unused parameter is an error.
Writes `OUT/<wrapper>-rank<r>.safetensors` with each step's loss and every parameter's gradient (gathered in full).
The wrapper `ddp-text` is DDP on a `memory_readout="text"` Larimar, whose objective trains the addressing alone
(the encoder and the latent projection; everything else frozen, as `larimar-train` does).
"""

import os
import sys
from pathlib import Path

import torch


EPISODE_SIZE = 4
EPISODES = 2
STEPS = 2
LEARNING_RATE = 0.05


def episodes(processor):
    """Two episodes of facts whose answers have the same number of target tokens in every item, so that each
    rank's mean loss over its tokens averages to the mean over all tokens (what one process computes)."""
    from hf_ext.testing.larimar import evaluation_facts

    facts = evaluation_facts(64, seed=3)
    counts = [int((processor.episode([f.text])["labels"] != -100).sum()) for f in facts]
    common = max(set(counts), key=counts.count)
    chosen = [f for f, count in zip(facts, counts) if count == common][: EPISODE_SIZE * EPISODES]
    assert len(chosen) == EPISODE_SIZE * EPISODES
    return chosen


def build(readout="latent"):
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.training import freeze_all_but_addressing
    from hf_ext.testing import tiny_model_dir

    torch.manual_seed(0)
    model = LarimarForCausalLM.from_encoder_decoder_pretrained(
        tiny_model_dir("tiny-bert"),
        tiny_model_dir("tiny-llama"),
        latent_size=32,
        memory_size=48,
        pooling="mean",
        w_logvar_mode="memory",
        deterministic_read=True,
        memory_readout=readout,
        scope_threshold=0.5,
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if readout == "text":
        freeze_all_but_addressing(model, train_encoder=True)
    return model


def _full(tensor):
    """A gradient as a plain tensor (FSDP2 keeps sharded DTensors)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def run(out_dir, wrapper="ddp", world_size=None):
    from transformers import AutoTokenizer

    from hf_ext._compat import enable_activation_checkpointing
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.serialization import save_tensors
    from hf_ext.testing import tiny_model_dir

    distributed = world_size != 1
    rank = int(os.environ.get("RANK", 0)) if distributed else 0
    size = int(os.environ.get("WORLD_SIZE", 1)) if distributed else 1
    if distributed:
        torch.distributed.init_process_group("gloo")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("tiny-llama"))
    processor = LarimarProcessor(tokenizer, tokenizer)
    facts = episodes(processor)
    share = len(facts) // size
    mine = facts[rank * share : (rank + 1) * share]
    batch = processor.episode([f.text for f in mine], [f.prompt for f in mine])

    model = build("text" if wrapper == "ddp-text" else "latent").train()
    enable_activation_checkpointing(model, {"use_reentrant": False})
    if distributed and wrapper in ("ddp", "ddp-text"):
        wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
    elif distributed and wrapper == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for module in (*model.model.encoder.encoder.layer, *model.model.decoder.layers, model.model.memory):
            fully_shard(module)
        wrapped = fully_shard(model)
    else:
        wrapped = model
    names = {id(p): n for n, p in model.named_parameters()}  # FSDP2 replaces the parameters by sharded ones
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    tensors = {}
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = wrapped(**batch, episode_size=EPISODE_SIZE).loss
        loss.backward()
        tensors[f"loss.{step}"] = loss.detach().reshape(1)
        for parameter in model.parameters():
            if parameter.grad is not None:
                tensors[f"grad.{step}.{names[id(parameter)]}"] = _full(parameter.grad).detach().clone()
        optimizer.step()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_tensors(Path(out_dir) / f"{wrapper}-rank{rank}.safetensors", tensors)
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
