"""SASAProbe: batched last-token embeddings, the fit, save / load / push, and its checks of the model."""

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.hf_api import RepoUrl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ext.sasa import SASAProbe, last_token_hidden_states
from hf_ext.sasa.lda import fit_lda


DESIRED = [
    "The cat sat on the warm mat.",
    "Thank you, that was kind.",
    "We walked along the river at dawn.",
    "A cup of tea and a good book.",
    "She smiled and waved hello.",
]
UNDESIRED = [
    "You are a stupid idiot.",
    "I hate you and your ugly face.",
    "Shut up, nobody wants you here, loser.",
    "What a worthless pile of garbage.",
]


@pytest.fixture(scope="module")
def llama(tiny_llama_path):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()


@pytest.fixture(scope="module")
def probe(llama, tiny_tokenizer):
    return SASAProbe.fit(llama, tiny_tokenizer, DESIRED, UNDESIRED, show_progress=False)


def _oracle_embedding(model, tokenizer, text, layer=-1):
    """One text alone through the full causal LM (not the decoder body the probe uses)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0, -1]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("layer", [-1, 1])
def test_embeddings_are_padding_invariant(llama, tiny_llama_path, padding_side, layer):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path, padding_side=padding_side)
    texts = DESIRED + UNDESIRED  # different lengths, so every batch is padded
    got = last_token_hidden_states(llama, tokenizer, texts, layer=layer, batch_size=3)
    expected = torch.stack([_oracle_embedding(llama, tokenizer, t, layer) for t in texts])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_fit_is_lda_on_the_last_token_states(llama, tiny_tokenizer, probe):
    x_d = torch.stack([_oracle_embedding(llama, tiny_tokenizer, t) for t in DESIRED])
    x_u = torch.stack([_oracle_embedding(llama, tiny_tokenizer, t) for t in UNDESIRED])
    expected = fit_lda(x_d, x_u)
    torch.testing.assert_close(probe.direction, expected.direction, atol=1e-4, rtol=0)
    torch.testing.assert_close(probe.midpoint, expected.midpoint, atol=1e-5, rtol=0)
    assert probe.fit_info["num_desired"] == 5 and probe.fit_info["num_undesired"] == 4
    assert probe.fit_info["shrinkage"] == pytest.approx(expected.shrinkage)
    # margins: positive = desired side, and the recorded accuracy is what the margins say
    m_d, m_u = probe.margin(x_d), probe.margin(x_u)
    accuracy = (int((m_d > 0).sum()) + int((m_u <= 0).sum())) / 9
    assert probe.fit_info["train_accuracy"] == pytest.approx(accuracy)
    assert float(m_d.mean()) > 0 > float(m_u.mean())
    assert probe.model_info["hidden_size"] == 64 and probe.model_info["model_type"] == "llama"
    assert probe.model_info["model_name_or_path"] == str(llama.config._name_or_path)


def test_margin_shapes_dtypes_and_errors(probe):
    hidden = torch.randn(2, 3, 64, dtype=torch.float64)
    margin = probe.margin(hidden)
    assert margin.shape == (2, 3) and margin.dtype == torch.float32
    torch.testing.assert_close(margin, ((hidden.float() - probe.midpoint) @ probe.direction))
    with pytest.raises(ValueError, match="hidden states have size 32, but the probe has 64"):
        probe.margin(torch.randn(4, 32))


def test_save_and_load_round_trip(tmp_path, llama, probe):
    folder = probe.save_pretrained(tmp_path / "probe")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "sasa_probe.json", "sasa_probe.safetensors"]
    tensors = load_file(folder / "sasa_probe.safetensors")
    assert torch.equal(tensors["direction"], probe.direction) and torch.equal(tensors["midpoint"], probe.midpoint)
    config = json.loads((folder / "sasa_probe.json").read_text())
    assert config["layer"] == -1 and config["hidden_size"] == 64
    assert config["model"]["model_name_or_path"] == probe.model_info["model_name_or_path"]
    card = (folder / "README.md").read_text()
    assert "library_name: hf-ext" in card and "- sasa" in card and "hidden size 64" in card

    loaded = SASAProbe.from_pretrained(folder, model=llama)
    assert torch.equal(loaded.direction, probe.direction) and torch.equal(loaded.midpoint, probe.midpoint)
    assert loaded.layer == probe.layer and loaded.fit_info == probe.fit_info


def test_loading_for_another_model_is_a_clear_error(tmp_path, probe, tiny_gpt2_path, tiny_llama_path):
    folder = probe.save_pretrained(tmp_path / "probe")
    from hf_ext.testing import build_tiny_causal_lm

    wider = build_tiny_causal_lm("llama", hidden_size=96)
    with pytest.raises(ValueError, match="fitted on hidden size 64 .* the model has hidden size 96"):
        SASAProbe.from_pretrained(folder, model=wider)
    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_gpt2_path)
    with pytest.raises(ValueError, match="model_type='llama'"):
        SASAProbe.from_pretrained(folder, model=gpt2)
    renamed = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    renamed.config._name_or_path = "someone/else"
    with pytest.raises(ValueError, match="not on 'someone/else'.*check_model_name=False"):
        SASAProbe.from_pretrained(folder, model=renamed)
    assert SASAProbe.from_pretrained(folder, model=renamed, check_model_name=False).hidden_size == 64
    with pytest.raises(ValueError, match="is not a SASA probe"):
        SASAProbe.from_pretrained(tmp_path)


def test_push_to_hub_sends_safetensors_json_and_card(monkeypatch, probe):
    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}"))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            assert isinstance(op, CommitOperationAdd)
            files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
        commits.append((repo_id, files))
        return "ok"

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    assert probe.push_to_hub("me/sasa-probe") == "ok"
    ((repo_id, files),) = commits
    assert repo_id == "me/sasa-probe"
    assert sorted(files) == ["README.md", "sasa_probe.json", "sasa_probe.safetensors"]
    assert json.loads(files["sasa_probe.json"])["method"] == "sasa"


def test_fit_bad_input(llama, tiny_tokenizer, tiny_llama_path):
    with pytest.raises(ValueError, match="desired_texts must be a non-empty list"):
        SASAProbe.fit(llama, tiny_tokenizer, [], UNDESIRED)
    with pytest.raises(ValueError, match="undesired_texts must be a non-empty list"):
        SASAProbe.fit(llama, tiny_tokenizer, DESIRED, ["fine", ""])
    with pytest.raises(ValueError, match=r"layer=5 is out of range; expected an integer in \[-3, 2\]"):
        SASAProbe.fit(llama, tiny_tokenizer, DESIRED, UNDESIRED, layer=5)
    with pytest.raises(ValueError, match="batch_size=0"):
        SASAProbe.fit(llama, tiny_tokenizer, DESIRED, UNDESIRED, batch_size=0)
    no_pad = AutoTokenizer.from_pretrained(tiny_llama_path)
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        SASAProbe.fit(llama, no_pad, DESIRED, UNDESIRED)
    with pytest.raises(ValueError, match="direction and midpoint must be 1-D of the same size"):
        SASAProbe(torch.ones(4), torch.ones(5))
