"""What AOTTrainer leaves behind: logged diagnostics, reward-quantile plots (files and TensorBoard), model cards."""

import copy
import struct
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, RepoUrl
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ext.aot import AOTConfig, AOTTrainer
from hf_ext.aot.evaluation import completion_logps
from hf_ext.aot.losses import dominance_diagnostics
from hf_ext.aot.trainer import PLOT_FILE
from hf_ext.testing.aot import synthetic_preference_dataset


BETA = 0.5


@pytest.fixture(scope="module")
def other_reference(tiny_llama_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def tensorboard_images(log_dir: Path) -> dict[str, list[int]]:
    """Tags and steps of the image summaries in TensorBoard event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    images = {}
    for path in log_dir.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    assert value.image.encoded_image_string[:4] == b"\x89PNG"
                    images.setdefault(value.tag, []).append(event.step)
    return images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama_path, other_reference):
    """Four steps at learning rate 0 (the model stays put, so every logged figure can be recomputed), logged to
    TensorBoard, with a checkpoint every two steps."""
    out = tmp_path_factory.mktemp("aot-run")
    dataset = synthetic_preference_dataset(32, seed=12)
    trainer = AOTTrainer(
        str(tiny_llama_path),
        ref_model=copy.deepcopy(other_reference),
        args=AOTConfig(
            str(out / "run"),
            beta=BETA,
            per_device_train_batch_size=8,
            max_steps=4,
            learning_rate=0.0,
            gradient_checkpointing=False,
            logging_steps=1,
            save_strategy="steps",
            save_steps=2,
            report_to="tensorboard",
            disable_tqdm=True,
            dataloader_pin_memory=False,
        ),
        train_dataset=dataset,
    )
    batches = []
    compute_loss = trainer.compute_loss
    trainer.compute_loss = lambda model, inputs, *a, **k: (
        batches.append(inputs) or compute_loss(model, inputs, *a, **k)
    )
    trainer.train()
    return trainer, batches, out


def test_diagnostics_are_logged_at_every_logging_step(trained, tiny_llama_path, other_reference):
    trainer, batches, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == len(batches) == 4
    for entry, batch in zip(logs, batches):
        # Recompute what the loss compares, independently: plain forward passes, decoded prompts and completions.
        n = len(batch["input_ids"]) // 2
        texts = [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(batch["input_ids"], batch["completion_mask"])]
        prompts = [
            tokenizer.decode(ids[(1 - mask).bool() & att.bool()])
            for ids, mask, att in zip(batch["input_ids"], batch["completion_mask"], batch["attention_mask"])
        ]
        logps = {}
        for name, model in (("policy", policy), ("ref", other_reference)):
            logps[name] = completion_logps(model, tokenizer, prompts, texts, add_eos=False)
        u = logps["policy"][:n] - logps["policy"][n:]
        v = logps["ref"][:n] - logps["ref"][n:]
        expected = dominance_diagnostics(BETA * u, BETA * v)
        for key, value in expected.items():
            assert entry[f"aot/{key}"] == pytest.approx(value, abs=2e-5), key
    assert any(entry["aot/violation_fraction"] > 0 for entry in logs)  # the figures are not trivially zero


def test_reward_quantile_plot_at_each_save_and_in_tensorboard(trained):
    trainer, _, out = trained
    for step in (2, 4):
        assert (out / "run" / f"checkpoint-{step}" / PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    assert tensorboard_images(out / "run") == {"aot/reward_quantiles": [2, 4]}
    assert "aot/violation_fraction" in trainer.state.log_history[0]


def test_saved_model_has_an_aot_card(trained, tmp_path):
    trainer, _, _ = trained
    trainer.model.config._name_or_path = "org/base-model"  # as if loaded from the Hub
    trainer.create_model_card(dataset_name="org/preferences")
    trainer.save_model(str(tmp_path / "final"))
    card = ModelCard.load(tmp_path / "final" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "hf-ext" and {"aot", "trl", "dpo"} <= set(data["tags"])
    assert data["base_model"] == "org/base-model" and data["datasets"] == "org/preferences"
    config = data["hf_ext"]["config"]
    assert config["aot_variant"] == "paired" and config["aot_cost"] == "logistic" and config["beta"] == BETA
    assert config["sorted_batch_size"] == 8
    assert "alignment via optimal transport" in card.text and "melnyk2024distributional" in card.text
    assert f"]({PLOT_FILE})" in card.text and (tmp_path / "final" / PLOT_FILE).exists()
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "final").config.model_type == "llama"


def test_push_to_hub_uploads_the_card(trained, monkeypatch):
    trainer, _, _ = trained
    uploads = []

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        uploads.append((repo_id, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    trainer.args.hub_model_id = "someone/aot-tiny"
    trainer.hub_model_id = None
    trainer.push_to_hub(dataset_name="org/preferences")
    ((repo_id, files),) = uploads
    assert repo_id == "someone/aot-tiny"
    assert {"README.md", "model.safetensors", PLOT_FILE} <= set(files)
    readme = files["README.md"].decode()
    assert "library_name: hf-ext" in readme and "aot_variant: paired" in readme
    assert 'from_pretrained("someone/aot-tiny")' in readme and "org/preferences" in readme
