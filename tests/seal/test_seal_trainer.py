import warnings

import pytest
import torch
from datasets import Dataset

from hf_ext.seal import SEALConfig, SEALTrainer
from hf_ext.seal.data import content_hash
from hf_ext.seal.ranking import auroc
from tests.portable import expect


def _planted_scores(trainer, finetune):
    scores = trainer.scores()
    values = torch.tensor([scores[content_hash(row, ("messages",))] for row in finetune])
    harmful = torch.tensor(finetune["harmful"])
    return values, harmful


@pytest.mark.slow
def test_planted_task_oracle(planted_run, planted_data):
    trainer, _ = planted_run
    _, finetune = planted_data
    values, harmful = _planted_scores(trainer, finetune)
    expect("AUROC of the planted scores", auroc(values[~harmful], values[harmful]), at_least=0.95)
    kept = trainer.filter(keep_ratio=0.8)
    assert len(kept) == int(0.8 * len(finetune))
    expect("share of the harmful examples kept", sum(kept["harmful"]) / int(harmful.sum()), at_most=0.05)
    # The model kept its safety: λ went 1 -> 0.7 -> 0.4 and the ranker took one step per optimizer step.
    assert trainer.state.global_step == 30 and trainer.scores().metadata["ranker_steps"] == 30


@pytest.mark.slow
def test_resume_from_a_checkpoint_gives_the_same_scores(planted_run, planted_trainer_factory, tmp_path):
    trainer, output_dir = planted_run
    checkpoint = output_dir / "checkpoint-15"
    assert (checkpoint / "seal_ranker.safetensors").exists() and (checkpoint / "seal_ranker.json").exists()
    resumed = planted_trainer_factory(tmp_path, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 30
    # Same seed, same data: the resumed run ends exactly where the uninterrupted one did.
    assert torch.equal(resumed.scores().scores, trainer.scores().scores)
    assert resumed.scores().hashes == trainer.scores().hashes


def test_prompt_tokens_are_masked_through_the_chat_template(planted_trainer_factory, planted_data, tmp_path):
    trainer = planted_trainer_factory(tmp_path, max_steps=1)
    _, finetune = planted_data
    tokenizer = trainer.processing_class
    for i in range(3):
        row = trainer.train_dataset[i]
        target = tokenizer.decode([t for t, m in zip(row["input_ids"], row["completion_mask"]) if m])
        assert target == finetune[i]["messages"][1]["content"] + "<|im_end|>"
        assert trainer.scores().hashes[row["seal_index"]] == content_hash(finetune[i], ("messages",))


def test_small_safe_set_cycles_and_does_not_cut_the_epoch(aligned_path, planted_data, tmp_path):
    from transformers import AutoModelForCausalLM

    safe, finetune = planted_data
    args = SEALConfig(
        str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        safe_batch_size=2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
        ranker_optimizer="sgd",
    )
    trainer = SEALTrainer(
        AutoModelForCausalLM.from_pretrained(aligned_path),
        args=args,
        train_dataset=finetune.select(range(20)),
        safe_dataset=safe.select(range(3)),
    )
    seen = []
    original = trainer._next_safe_batch
    trainer._next_safe_batch = lambda: seen.append(trainer._safe_cursor) or original()
    trainer.train()
    assert trainer.state.global_step == 5  # the fine-tuning set sets the epoch, not the 3-example safe set
    assert seen == [0, 2, 4, 6, 8] and trainer._safe_cursor == 10


def test_penalty_moves_logits_at_once_full_only_after_the_auxiliary_adapter_diverges(
    aligned_path, planted_data, tmp_path
):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    safe, finetune = planted_data
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    common = dict(
        per_device_train_batch_size=8,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
        ranker_optimizer="sgd",
        ranker_learning_rate=1.0,
        learning_rate=1e-2,
        upper_level_weight=0.5,
    )
    small = finetune.select(range(16))
    runs = {}
    for algorithm in ("penalty", "full"):
        args = SEALConfig(str(tmp_path / algorithm), max_steps=1, algorithm=algorithm, **common)
        trainer = SEALTrainer(
            AutoModelForCausalLM.from_pretrained(aligned_path),
            args=args,
            train_dataset=small,
            safe_dataset=safe,
            peft_config=lora,
        )
        trainer.train()
        runs[algorithm] = trainer
    # Penalty: the ranker moves on the first step. Full: θ̂ = θ at the start (both adapters are zero), so the excess
    # loss, and the ranker's gradient, is exactly zero on the first step.
    assert torch.count_nonzero(runs["penalty"].ranker_logits) > 0
    assert torch.count_nonzero(runs["full"].ranker_logits) == 0
    model = runs["full"].model
    assert set(model.peft_config) == {"default", "seal_aux"}
    b_main = dict(model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    b_aux = dict(model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.seal_aux.weight"]
    assert torch.count_nonzero(b_main) > 0 and torch.count_nonzero(b_aux) > 0 and not torch.equal(b_main, b_aux)

    # A second step: the adapters now differ, so the full algorithm's ranker moves too.
    args = SEALConfig(str(tmp_path / "full2"), max_steps=2, algorithm="full", **common)
    trainer = SEALTrainer(
        AutoModelForCausalLM.from_pretrained(aligned_path),
        args=args,
        train_dataset=small,
        safe_dataset=safe,
        peft_config=lora,
    )
    trainer.train()
    assert torch.count_nonzero(trainer.ranker_logits) > 0


@pytest.mark.slow
def test_qlora_4bit_trains_adapters_and_ranker(aligned_path, planted_data, tmp_path):
    from peft import LoraConfig

    from hf_ext.quantization import load_quantized

    safe, finetune = planted_data
    model = load_quantized(aligned_path, bits=4, prepare_for_training=True)
    args = SEALConfig(
        str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=8,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
        ranker_optimizer="sgd",
        learning_rate=1e-2,
        upper_level_weight=0.5,
    )
    trainer = SEALTrainer(
        model,
        args=args,
        train_dataset=finetune.select(range(16)),
        safe_dataset=safe,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert torch.count_nonzero(trainer.ranker_logits) == 16  # every example was in one of the two batches


def test_bad_input_fails_before_loading_anything(planted_data, tmp_path):
    safe, finetune = planted_data
    args = SEALConfig(str(tmp_path), report_to="none", use_cpu=True)
    missing_model = "no-such-org/no-such-model"  # never loaded: the checks come first
    with pytest.raises(ValueError, match="safe_dataset is empty"):
        SEALTrainer(missing_model, args=args, train_dataset=finetune, safe_dataset=safe.select([]))
    with pytest.raises(ValueError, match="safe_dataset is required"):
        SEALTrainer(missing_model, args=args, train_dataset=finetune)
    with pytest.raises(ValueError, match=r"train_dataset: The dataset has columns \['answer', 'question'\]"):
        SEALTrainer(
            missing_model,
            args=args,
            train_dataset=Dataset.from_dict({"question": ["q"], "answer": ["a"]}),
            safe_dataset=safe,
        )
    with pytest.raises(ValueError, match="IterableDataset"):
        SEALTrainer(missing_model, args=args, train_dataset=finetune.to_iterable_dataset(), safe_dataset=safe)
    full = SEALConfig(str(tmp_path), report_to="none", use_cpu=True, algorithm="full")
    with pytest.raises(ValueError, match="algorithm='full' keeps the auxiliary model as a second LoRA adapter"):
        SEALTrainer(missing_model, args=full, train_dataset=finetune, safe_dataset=safe)
    # Under DDP the auxiliary adapter's forward is not the wrapped one: looking for unused parameters would fail.
    from peft import LoraConfig

    full.ddp_find_unused_parameters = True
    with pytest.raises(ValueError, match="ddp_find_unused_parameters=True is not supported with algorithm='full'"):
        SEALTrainer(missing_model, args=full, train_dataset=finetune, safe_dataset=safe, peft_config=LoraConfig())


def test_config_validation_and_the_sigmoid_adam_warning(tmp_path):
    for field, value, message in [
        ("keep_ratio", 0.0, r"keep_ratio=0.0 is out of range; expected a number in \(0, 1\]"),
        ("keep_ratio", 1.2, r"keep_ratio=1.2 is out of range"),
        ("upper_level_weight", 1.5, "upper_level_weight=1.5"),
        ("weighting", "relu", "weighting='relu'"),
        ("algorithm", "exact", "algorithm='exact'"),
        ("ranker_learning_rate", 0.0, "ranker_learning_rate=0.0"),
        ("safe_batch_size", 0, "safe_batch_size=0"),
    ]:
        with pytest.raises(ValueError, match=message):
            SEALConfig(str(tmp_path), **{field: value})
    with pytest.warns(UserWarning, match="near-random ranking"):
        SEALConfig(str(tmp_path), weighting="sigmoid", ranker_optimizer="adam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SEALConfig(str(tmp_path), weighting="sigmoid", ranker_optimizer="sgd")
