"""SEAL fixtures: the planted task (built once, cached by fingerprint) and one SEAL run on it per session."""

import pytest

from tests.portable import SEED


# The planted-task recipe the oracles hold for: SGD on the logits (magnitude-aware), λ 1 -> 0.7 -> 0.4.
PLANTED_ARGS = dict(
    per_device_train_batch_size=16,
    num_train_epochs=3,
    learning_rate=1e-3,
    ranker_optimizer="sgd",
    ranker_learning_rate=1.0,
    upper_level_weight_decay=0.3,
    seed=SEED,
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    logging_steps=5,
)


@pytest.fixture(scope="session")
def planted_data():
    from hf_ext.testing.seal import planted_datasets

    return planted_datasets()


@pytest.fixture(scope="session")
def aligned_path():
    from hf_ext.testing.seal import aligned_model_dir

    return aligned_model_dir()


def make_planted_trainer(aligned_path, planted_data, output_dir, **overrides):
    from transformers import AutoModelForCausalLM

    from hf_ext.seal import SEALConfig, SEALTrainer

    safe, finetune = planted_data
    args = SEALConfig(str(output_dir), **{**PLANTED_ARGS, **overrides})
    return SEALTrainer(
        AutoModelForCausalLM.from_pretrained(aligned_path), args=args, train_dataset=finetune, safe_dataset=safe
    )


@pytest.fixture(scope="session")
def planted_run(aligned_path, planted_data, tmp_path_factory):
    """A full SEAL run on the planted task, saving a checkpoint after step 15 (of 30)."""
    output_dir = tmp_path_factory.mktemp("seal-planted")
    trainer = make_planted_trainer(
        aligned_path, planted_data, output_dir, save_strategy="steps", save_steps=15, save_only_model=False
    )
    trainer.train()
    return trainer, output_dir


@pytest.fixture(scope="session")
def planted_trainer_factory(aligned_path, planted_data):
    """`factory(output_dir, **config_overrides)` -> a fresh SEALTrainer on the planted task."""
    return lambda output_dir, **overrides: make_planted_trainer(aligned_path, planted_data, output_dir, **overrides)
