"""Larimar's training objective, the episode collator, Trainer, gradient checkpointing, PEFT and the CLI."""

import json

import pytest
import torch

from hf_ext._compat import enable_activation_checkpointing
from hf_ext.larimar import memory as mem
from hf_ext.larimar.training import LarimarEpisodeCollator, LarimarKLAnnealingCallback, kl_annealing_scale
from hf_ext.testing.larimar import Fact, evaluation_facts


FACTS = [f.as_dict() for f in evaluation_facts(8, seed=5)]
WEIGHTS = {
    "reconstruction_weight": 1.0,
    "autoencoder_weight": 0.5,
    "no_memory_weight": 0.25,
    "query_weight": 2.0,
    "kl_beta": 0.1,
}


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _batch(processor, rows=FACTS):
    return processor.episode([r["text"] for r in rows], [r["prompt"] for r in rows])


def test_objective_is_the_weighted_sum_of_the_decoding_terms(larimar_factory, tiny_processor):
    model = larimar_factory("gpt2", **WEIGHTS)  # eval mode: deterministic reads, no write noise
    batch = _batch(tiny_processor)
    out = model(**batch)
    decoder_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    # Each term is the ordinary LM loss of the decoder conditioned on the latent the paper names.
    z = model.model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
    q = model.model.encode(batch["query_input_ids"], batch["query_attention_mask"])
    memory = mem.write(z[None], model.model.memory.prior, dtype=torch.float64)
    z_read = mem.read(z[None], memory)[0].float()
    q_read = mem.read(q[None], memory)[0].float()
    expected = {
        "reconstruction_loss": model(**decoder_inputs, memory_latent=z_read).loss,
        "autoencoder_loss": model(**decoder_inputs, memory_latent=z).loss,
        "no_memory_loss": model(**decoder_inputs, memory_latent=torch.zeros_like(z)).loss,
        "query_loss": model(**decoder_inputs, memory_latent=q_read).loss,
    }
    for name, value in expected.items():
        torch.testing.assert_close(getattr(out, name), value, rtol=1e-4, atol=1e-5, msg=name)
    w_mean = z[None].double() @ torch.linalg.pinv(memory)
    w_logvar = model.model.memory.w_logvar.double()
    kl = 0.5 * (w_logvar.exp() + w_mean.square() - 1 - w_logvar).sum(-1).mean()
    torch.testing.assert_close(out.kl_loss.double(), kl, rtol=1e-5, atol=1e-6)
    total = (
        expected["reconstruction_loss"]
        + 0.5 * expected["autoencoder_loss"]
        + 0.25 * expected["no_memory_loss"]
        + 2.0 * expected["query_loss"]
        + 0.1 * kl.float()
    )
    torch.testing.assert_close(out.loss, total, rtol=1e-4, atol=1e-5)
    model.kl_scale = 0.0  # what the annealing callback sets early in training
    torch.testing.assert_close(model(**batch).loss, total - 0.1 * kl.float(), rtol=1e-4, atol=1e-5)


def test_padding_is_masked(larimar_factory, tiny_processor, tiny_tokenizer):
    model = larimar_factory("llama")
    batch = _batch(tiny_processor)
    padded = dict(batch)
    pad = torch.full((len(FACTS), 3), tiny_tokenizer.pad_token_id)
    padded["input_ids"] = torch.cat([batch["input_ids"], pad], 1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros_like(pad)], 1)
    padded["labels"] = torch.cat([batch["labels"], torch.full_like(pad, -100)], 1)
    torch.testing.assert_close(model(**padded).loss, model(**batch).loss, rtol=1e-5, atol=1e-6)
    # Counting the pads as targets (as the official code does) would change it.
    unmasked = dict(padded, labels=padded["input_ids"])
    assert not torch.allclose(model(**unmasked).loss, model(**batch).loss, atol=1e-3)


def test_each_episode_gets_its_own_memory(larimar_factory, tiny_processor):
    model = larimar_factory("gpt2")
    both = model(**_batch(tiny_processor), episode_size=4)
    for half in (slice(0, 4), slice(4, 8)):
        alone = model(**_batch(tiny_processor, FACTS[half]))
        torch.testing.assert_close(both.memory_latent[half], alone.memory_latent, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch of 8 items does not split into episodes of episode_size=3"):
        model(**_batch(tiny_processor), episode_size=3)


def test_collator_builds_episodes(tiny_processor):
    collator = LarimarEpisodeCollator(tiny_processor, episode_size=4)
    batch = collator(FACTS)
    expected = _batch(tiny_processor)
    for key, value in expected.items():
        assert torch.equal(batch[key], value), key
    assert batch["episode_size"] == 4
    without_prompts = LarimarEpisodeCollator(tiny_processor)([{"text": r["text"]} for r in FACTS])
    assert "query_input_ids" not in without_prompts and "episode_size" not in without_prompts
    with pytest.raises(ValueError, match="A batch of 8 examples does not split into episodes of 3"):
        LarimarEpisodeCollator(tiny_processor, episode_size=3)(FACTS)
    with pytest.raises(KeyError, match="have no 'text' field"):
        collator([{"prompt": "x"}])


def test_kl_annealing_schedule():
    assert [kl_annealing_scale(s, 100) for s in (0, 49, 50, 60, 75, 99)] == pytest.approx([0, 0, 0, 0.4, 1, 1])
    assert kl_annealing_scale(10, 100, zero_ratio=0.0, increase_ratio=0.0) == 1.0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(family, larimar_factory, tiny_processor):
    batch = _batch(tiny_processor)
    results = []
    for checkpointing in (False, True):
        model = _no_dropout(larimar_factory(family, deterministic_read=True))
        model.train()
        if checkpointing:
            enable_activation_checkpointing(model, {"use_reentrant": False})
        loss = model(**batch).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    assert any("prefix_projection" in n for n in grads_a)  # the memory slot is trained through the checkpoints
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_every_trainable_parameter_gets_a_gradient(pooling, larimar_factory, tiny_processor, tmp_path):
    # A trainable parameter without a gradient is an error under DDP (the default find_unused_parameters=False).
    model = larimar_factory("gpt2", pooling=pooling).train()
    model(**_batch(tiny_processor)).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    has_pooler = any(".pooler." in n for n, _ in model.named_parameters())
    assert has_pooler == (pooling == "pooler")
    if pooling == "pooler":
        # A checkpoint with the pooler loads into a mean-pooling model: every other weight is restored.
        model.save_pretrained(tmp_path)
        reloaded = type(model).from_pretrained(tmp_path, pooling="mean")
        saved = {n: p for n, p in model.state_dict().items() if ".pooler." not in n}
        restored = reloaded.state_dict()
        assert restored.keys() == saved.keys()
        for name, value in saved.items():
            assert torch.equal(restored[name], value), name


def test_lora_on_the_decoder(larimar_factory, tiny_processor):
    from peft import LoraConfig, get_peft_model

    model = larimar_factory("llama")
    batch = _batch(tiny_processor)
    before = model(**batch).loss.detach()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=r".*decoder.*\.(q_proj|v_proj)", task_type="CAUSAL_LM")
    )
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".decoder." in n for n in trainable)
    torch.testing.assert_close(peft_model(**batch).loss, before)  # LoRA starts as the identity
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    for _ in range(3):
        peft_model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    assert peft_model(**batch).loss < before
    for name, param in peft_model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, frozen[name.replace(".base_layer", "")]), name
    inputs = tiny_processor(["The morning train"])
    generated = peft_model.generate(**inputs, max_new_tokens=3, do_sample=False, eos_token_id=None)
    assert generated.shape == (1, inputs["input_ids"].shape[1] + 3)


@pytest.mark.slow
def test_trainer_trains_with_the_collator_and_the_kl_callback(larimar_factory, tiny_processor, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = larimar_factory("gpt2", kl_beta=0.01)
    model.train()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=16,
        learning_rate=5e-3,
        logging_steps=1,
        report_to="none",
        remove_unused_columns=False,
        train_sampling_strategy="sequential",
        save_strategy="no",
        dataloader_pin_memory=False,
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(FACTS),
        data_collator=LarimarEpisodeCollator(tiny_processor, episode_size=8),
        callbacks=[LarimarKLAnnealingCallback()],
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 16 and losses[-1] < 0.75 * losses[0]
    assert model.kl_scale == kl_annealing_scale(15, 16)


@pytest.mark.slow
def test_cli_trains_and_saves_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_ext.cli import main
    from hf_ext.larimar.processing_larimar import LarimarProcessor

    output = tmp_path / "out"
    status = main(
        [
            "larimar-train",
            "--config",
            "trainers/larimar.yaml",
            "--max_steps",
            "3",
            "--num_episodes",
            "3",
            "--output_dir",
            str(output),
            "--latent_size",
            "32",
            "--memory_size",
            "32",
        ]
    )
    assert status == 0
    model = AutoModelForCausalLM.from_pretrained(output)
    assert model.config.latent_size == 32 and model.config.episode_size == 16
    processor = LarimarProcessor.from_pretrained(output)
    processor.check_model(model)
    assert not (output / "training_args.bin").exists()  # no pickle
    assert json.loads((output / "training_args.json").read_text())["max_steps"] == 3
    assert "Larimar" in (output / "README.md").read_text()
    assert main(["larimar-train", "--config", "trainers/larimar.yaml", "--per_device_train_batch_size", "10"]) == 2


def test_fact_corpus_answers_are_single_tokens(tiny_tokenizer):
    from hf_ext.testing import larimar as facts

    for word in facts.OBJECTS + facts.RELATIONS:
        assert len(tiny_tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    fact = Fact("harbour", "visited", "Lima")
    assert fact.as_dict() == {"text": "harbour visited Lima", "prompt": "harbour visited", "answer": "Lima"}
    held_out = evaluation_facts(180, seed=3)  # every held-out prompt, once
    assert len({f.prompt for f in held_out}) == 180
    with pytest.raises(ValueError, match="count=181 exceeds the 180 distinct prompts"):
        evaluation_facts(181)
    dataset = facts.fact_dataset(5, episode_size=40, seed=0)
    # Training never sees a held-out prompt, so no evaluation fact was ever seen in training.
    assert dataset.num_rows == 200 and not set(dataset["prompt"]) & {f.prompt for f in held_out}
    for start in range(0, 200, 40):
        assert len(set(dataset[start : start + 40]["prompt"])) == 40  # an episode never repeats a prompt
