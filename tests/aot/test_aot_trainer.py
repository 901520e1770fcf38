"""`AOTTrainer` on tiny offline models: TRL parity, unpaired data, references, PEFT / QLoRA, resuming, bad input."""

import copy
import warnings

import pytest
import torch
from aot_args import FAST, make_args
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer

from hf_ext.aot import AOTConfig, AOTTrainer
from hf_ext.aot.data import DataCollatorForAOT
from hf_ext.aot.evaluation import completion_logps
from hf_ext.aot.losses import aot_unpaired_loss
from hf_ext.testing.aot import synthetic_preference_dataset


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_path):
    return AutoTokenizer.from_pretrained(tiny_llama_path)


@pytest.fixture(scope="module")
def other_reference(tiny_llama_path):
    """A reference model that differs from the initial policy, so that the rewards are not all zero."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def collate(trainer, rows):
    """A batch as the trainer's loop gets it: collated, then on the trainer's device (the GPU when there is one)."""
    return trainer._prepare_inputs(trainer.data_collator(rows))


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def unpaired_rows(labels, seed=0):
    pairs = synthetic_preference_dataset(len(labels), seed=seed)
    return Dataset.from_list(
        [
            {"prompt": row["prompt"], "completion": row["chosen"] if label else row["rejected"], "label": label}
            for row, label in zip(pairs, labels)
        ]
    )


# ---------------------------------------------------------------------------------------------- parity with TRL


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "trl_loss_type"), [("paired", "aot"), ("unpaired", "aot_unpaired")])
def test_loss_and_gradients_equal_trl_dpo_trainer(tmp_path, tiny_llama_path, other_reference, variant, trl_loss_type):
    dataset = synthetic_preference_dataset(12, seed=3)
    common = {**FAST, "beta": 0.1, "label_smoothing": 0.1}
    ours = AOTTrainer(
        str(tiny_llama_path),
        ref_model=copy.deepcopy(other_reference),
        args=AOTConfig(str(tmp_path / "a"), aot_variant=variant, **common),
        train_dataset=dataset,
    )
    theirs = DPOTrainer(
        str(tiny_llama_path),
        ref_model=copy.deepcopy(other_reference),
        args=DPOConfig(str(tmp_path / "b"), loss_type=trl_loss_type, bf16=False, **common),
        train_dataset=dataset,
    )
    examples = [ours.train_dataset[i] for i in range(12)]
    batch = collate(ours, examples)
    trl_batch = collate(theirs, [theirs.train_dataset[i] for i in range(12)])
    assert all(torch.equal(batch[key], trl_batch[key]) for key in trl_batch)  # same tokens, same layout

    ours.model.train()
    theirs.model.train()
    loss = ours.compute_loss(ours.model, batch)
    expected = theirs.compute_loss(theirs.model, trl_batch)
    assert abs(loss.item() - expected.item()) < 1e-6 and abs(loss.item() - 0.6931) > 1e-3
    loss.backward()
    expected.backward()
    ours_grads, trl_grads = grads(ours.model), grads(theirs.model)
    assert ours_grads.keys() == trl_grads.keys() and len(ours_grads) > 10
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, trl_grads[name], atol=1e-6, rtol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------- unpaired data


def test_unpaired_loss_equals_an_independent_computation(tmp_path, tiny_llama_path, tokenizer, other_reference):
    labels = [True, False, True, True, False, True, True, False, True, True]  # 7 desirable, 3 undesirable
    dataset = unpaired_rows(labels, seed=5)
    trainer = AOTTrainer(
        str(tiny_llama_path),
        ref_model=copy.deepcopy(other_reference),
        args=make_args(tmp_path, aot_variant="unpaired", aot_cost="squared_hinge", beta=0.05, aot_margin=0.2),
        train_dataset=dataset,
    )
    batch = collate(trainer, [trainer.train_dataset[i] for i in range(len(labels))])
    assert batch["label"].tolist() == labels
    loss = trainer.compute_loss(trainer.model, batch)

    # Independent: plain logits of the policy and of the reference, then the pure loss.
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    policy_logps = completion_logps(policy, tokenizer, dataset["prompt"], dataset["completion"])
    ref_logps = completion_logps(other_reference, tokenizer, dataset["prompt"], dataset["completion"])
    expected = aot_unpaired_loss(
        policy_logps, ref_logps, torch.tensor(labels), cost="squared_hinge", beta=0.05, margin=0.2
    )
    assert expected.item() > 1e-3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("label", [True, False])
def test_a_batch_with_one_label_only_is_defined(tmp_path, tiny_llama_path, other_reference, label):
    trainer = AOTTrainer(
        str(tiny_llama_path),
        ref_model=copy.deepcopy(other_reference),
        args=make_args(tmp_path, aot_variant="unpaired"),
        train_dataset=unpaired_rows([label] * 4),
    )
    batch = collate(trainer, [trainer.train_dataset[i] for i in range(4)])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(g).all() and not g.any() for g in grads(trainer.model).values())
    metrics = {k: v for k, v in trainer._metrics["train"].items() if v}
    assert all(torch.isfinite(torch.tensor(v)).all() for v in metrics.values())
    side = "chosen" if label else "rejected"
    assert f"rewards/{side}" in metrics and not any(k.startswith("aot/") for k in metrics)


@pytest.mark.slow
def test_unpaired_training_with_mixed_batches(tmp_path, tiny_llama_path):
    dataset = synthetic_preference_dataset(24, unpaired=True, positive_fraction=0.7, seed=2)
    trainer = AOTTrainer(
        str(tiny_llama_path),
        args=make_args(
            tmp_path, aot_variant="unpaired", per_device_train_batch_size=8, max_steps=3, learning_rate=1e-3
        ),
        train_dataset=dataset,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


@pytest.mark.slow
def test_conversational_data_masks_only_the_assistant_reply(tmp_path, tiny_llama_path, tokenizer):
    for unpaired in (False, True):
        dataset = synthetic_preference_dataset(8, conversational=True, unpaired=unpaired)
        trainer = AOTTrainer(
            str(tiny_llama_path),
            args=make_args(tmp_path, aot_variant="unpaired" if unpaired else "paired", max_steps=1),
            train_dataset=dataset,
        )
        row = trainer.train_dataset[0]
        completion = row["completion_ids"] if unpaired else row["chosen_ids"]
        reply = (row["completion"] if unpaired else row["chosen"])[0]["content"]
        assert tokenizer.decode(completion) == reply + "<|im_end|>\n"
        assert tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")
        trainer.train()
        assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))


# ---------------------------------------------------------------------------------------------- references


@pytest.mark.slow
def test_precomputed_reference_gives_the_same_loss(tmp_path, tiny_llama_path, other_reference):
    for variant, dataset in (
        ("paired", synthetic_preference_dataset(8, seed=4)),
        ("unpaired", unpaired_rows([True, False, False, True, True, False, True, True], seed=4)),
    ):
        losses = []
        for precompute in (False, True):
            trainer = AOTTrainer(
                str(tiny_llama_path),
                ref_model=copy.deepcopy(other_reference),
                args=make_args(
                    tmp_path / f"{variant}{precompute}", aot_variant=variant, precompute_ref_log_probs=precompute
                ),
                train_dataset=dataset,
            )
            columns = {"ref_chosen_logps", "ref_rejected_logps"} if variant == "paired" else {"ref_logps"}
            assert columns <= set(trainer.train_dataset.column_names) if precompute else True
            batch = collate(trainer, [trainer.train_dataset[i] for i in range(8)])
            assert columns <= set(batch) if precompute else not columns & set(batch)
            losses.append(trainer.compute_loss(trainer.model, batch).item())
        assert losses[0] == pytest.approx(losses[1], abs=1e-6) and abs(losses[0] - 0.6931) > 1e-3


@pytest.mark.slow
def test_peft_uses_the_adapter_disabled_model_as_reference(tmp_path, tiny_llama_path, tokenizer):
    from peft import LoraConfig

    dataset = synthetic_preference_dataset(16, seed=6)
    trainer = AOTTrainer(
        str(tiny_llama_path),
        args=make_args(tmp_path, max_steps=4, learning_rate=5e-2, per_device_train_batch_size=8, beta=0.5),
        train_dataset=dataset,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    batch = collate(trainer, [trainer.train_dataset[i] for i in range(8)])
    trainer.model.train()
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(
        0.693147, abs=1e-5
    )  # policy == reference
    trainer.train()
    assert all(torch.equal(p, base[n]) for n, p in trainer.model.named_parameters() if n in base)
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)
    # The reference is the base model: the same log-probs as a freshly loaded copy, not the trained adapter's.
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    expected = completion_logps(fresh, tokenizer, dataset["prompt"][:8], dataset["chosen"][:8])
    reference = trainer._reference_logps({k: v for k, v in batch.items()})[:8]
    torch.testing.assert_close(reference, expected, atol=1e-4, rtol=0)
    trained = completion_logps(trainer.model, tokenizer, dataset["prompt"][:8], dataset["chosen"][:8])
    assert (trained - expected).abs().max() > 1e-2


@pytest.mark.slow
def test_qlora_4bit_trains_on_cpu(tmp_path, tiny_llama_path):
    from bitsandbytes.nn import Linear4bit
    from peft import LoraConfig

    from hf_ext.quantization import load_quantized

    model = load_quantized(tiny_llama_path, bits=4, prepare_for_training=True, gradient_checkpointing=False)
    trainer = AOTTrainer(
        model,
        args=make_args(tmp_path, max_steps=2, learning_rate=1e-2, per_device_train_batch_size=8),
        train_dataset=synthetic_preference_dataset(16),
        processing_class=AutoTokenizer.from_pretrained(tiny_llama_path),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)
    q_proj = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, Linear4bit)


# ---------------------------------------------------------------------------------------------- training loop


@pytest.mark.slow
def test_gradient_accumulation_averages_the_micro_batch_losses(tmp_path, tiny_llama_path, tokenizer, other_reference):
    lr = 0.5
    dataset = synthetic_preference_dataset(8, seed=9)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    trainer = AOTTrainer(
        model,
        ref_model=copy.deepcopy(other_reference),
        args=make_args(
            tmp_path,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=1,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            beta=0.5,
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        optimizers=(torch.optim.SGD(model.parameters(), lr=lr), None),
    )
    start = copy.deepcopy(model)  # after the trainer patched in TRL's fused LM head, before any step
    seen = []
    compute_loss = trainer.compute_loss
    trainer.compute_loss = lambda m, inputs, *a, **k: seen.append(inputs) or compute_loss(m, inputs, *a, **k)
    trainer.train()
    assert len(seen) == 2 and all(len(b["input_ids"]) == 8 for b in seen)  # 2 micro-batches of 4 pairs

    # Expected: one SGD step on the mean of the two micro-batch losses, each batch sorted on its own.
    start.train()
    total = sum(compute_loss(start, batch) for batch in seen) / 2
    total.backward()
    moved = 0
    for (name, trained), initial in zip(model.named_parameters(), start.parameters()):
        expected = initial.detach() - lr * initial.grad if initial.grad is not None else initial.detach()
        torch.testing.assert_close(trained.detach(), expected, atol=1e-6, rtol=1e-5, msg=name)
        moved += int(initial.grad is not None and initial.grad.abs().max() > 0)
    assert moved > 10


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.mark.slow
def test_resume_from_checkpoint_reaches_the_same_weights(tmp_path, tiny_llama_path):
    dataset = synthetic_preference_dataset(32, seed=8)
    kwargs = {"per_device_train_batch_size": 8, "max_steps": 4, "learning_rate": 1e-3, "seed": 3}
    straight = AOTTrainer(str(tiny_llama_path), args=make_args(tmp_path / "a", **kwargs), train_dataset=dataset)
    straight.train()
    first = AOTTrainer(  # the same run, interrupted after its checkpoint at step 2
        str(tiny_llama_path),
        args=make_args(tmp_path / "b", save_strategy="steps", save_steps=2, **kwargs),
        train_dataset=dataset,
        callbacks=[_StopAt(2)],
    )
    first.train()
    assert first.state.global_step == 2
    checkpoint = tmp_path / "b" / "out" / "checkpoint-2"
    assert (checkpoint / "optimizer.pt").exists()
    resumed = AOTTrainer(
        str(tiny_llama_path),
        args=make_args(tmp_path / "b", save_strategy="steps", save_steps=2, **kwargs),
        train_dataset=dataset,
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    # ... and the interrupted run did move: the comparison is not between untrained models.
    assert any(not torch.equal(a, b) for a, b in zip(straight.model.parameters(), first.model.parameters()))


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("dataset", "config", "message"),
    [
        (Dataset.from_dict({"prompt": ["a"], "chosen": ["b"]}), {}, r"Missing column\(s\) \['rejected'\]"),
        (Dataset.from_dict({"prompt": ["a"], "completion": ["b"]}), {}, r"Missing column\(s\) \['label'\]"),
        (Dataset.from_dict({"text": ["a"]}), {}, r"columns \['text'\], which match no preference format"),
        (
            Dataset.from_dict({"prompt": ["a"], "completion": ["b"], "label": ["good"]}),
            {"aot_variant": "unpaired"},
            r"column 'label' must hold booleans.*'good' of type str",
        ),
        (
            Dataset.from_dict({"prompt": ["a"], "completion": ["b"], "label": [2]}),
            {"aot_variant": "unpaired"},
            r"column 'label' must hold booleans.*found 2",
        ),
        (Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}), {}, "train_dataset is empty"),
        (
            Dataset.from_dict({"prompt": ["a"], "completion": ["b"], "label": [True]}),
            {},
            "aot_variant='paired' needs paired data",
        ),
    ],
)
def test_bad_datasets_fail_before_loading_the_model(tmp_path, dataset, config, message):
    # The model id does not exist: the error must come from the data check, before any loading.
    with pytest.raises(ValueError, match=message):
        AOTTrainer("/nonexistent/model", args=make_args(tmp_path, **config), train_dataset=dataset)


def test_bad_eval_dataset_and_args(tmp_path, tiny_llama_path):
    good = synthetic_preference_dataset(4)
    with pytest.raises(ValueError, match=r"eval_dataset\['val'\] has columns"):
        AOTTrainer(
            "/nonexistent",
            args=make_args(tmp_path),
            train_dataset=good,
            eval_dataset={"val": Dataset.from_dict({"x": [1]})},
        )
    with pytest.raises(TypeError, match="args must be an AOTConfig"):
        AOTTrainer("/nonexistent", args=DPOConfig(str(tmp_path), bf16=False, **FAST), train_dataset=good)
    with pytest.raises(ValueError, match="train_dataset is required"):
        AOTTrainer("/nonexistent", args=make_args(tmp_path))


def test_small_sorted_batch_warns(tmp_path, tiny_llama_path):
    with pytest.warns(UserWarning, match=r"sorts batches of 4 pairs.*fewer than 8"):
        AOTTrainer(
            str(tiny_llama_path),
            args=make_args(tmp_path, per_device_train_batch_size=4),
            train_dataset=synthetic_preference_dataset(4),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        trainer = AOTTrainer(
            str(tiny_llama_path),
            args=make_args(tmp_path, per_device_train_batch_size=8),
            train_dataset=synthetic_preference_dataset(4),
        )
    assert trainer.sorted_batch_size == 8


def test_collator_layouts():
    collator = DataCollatorForAOT(pad_token_id=0)
    paired = collator(
        [
            {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]},
            {"prompt_ids": [6], "chosen_ids": [7, 8], "rejected_ids": [9]},
        ]
    )
    assert paired["input_ids"].tolist() == [[1, 2, 3, 0], [6, 7, 8, 0], [1, 2, 4, 5], [6, 9, 0, 0]]
    assert paired["completion_mask"].tolist() == [[0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 1, 0, 0]]
    unpaired = DataCollatorForAOT(pad_token_id=0, max_length=3)(
        [
            {"prompt_ids": [1, 2], "completion_ids": [3, 4], "label": True, "ref_logps": -1.5},
            {"prompt_ids": [5], "completion_ids": [6], "label": 0, "ref_logps": -2.0},
        ]
    )
    assert unpaired["input_ids"].tolist() == [[1, 2, 3], [5, 6, 0]]
    assert unpaired["completion_mask"].tolist() == [[0, 0, 1], [0, 1, 0]]
    assert unpaired["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert unpaired["label"].tolist() == [True, False] and unpaired["ref_logps"].tolist() == [-1.5, -2.0]
