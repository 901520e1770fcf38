"""SASAProbe: batched last-token embeddings, the fit, save / load / push, and its checks of the model."""

import json
import random
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.hf_api import RepoUrl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ext.sasa import SASAProbe, last_token_hidden_states, prefix_hidden_states, word_prefixes
from hf_ext.sasa.lda import fit_lda, pooled_covariance, separability


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
    return SASAProbe.fit(llama, tiny_tokenizer, DESIRED, UNDESIRED, layer=-1, balance=False, show_progress=False)


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
    assert probe.fit_info["layer_selection"] == "given" and 0.0 <= probe.fit_info["held_out_auc"] <= 1.0
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
    with pytest.raises(ValueError, match="desired_texts is empty; expected a non-empty list of texts"):
        SASAProbe.fit(llama, tiny_tokenizer, [], UNDESIRED)
    with pytest.raises(ValueError, match=r"undesired_texts holds 1 empty text\(s\) \(at index 1\)"):
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
    with pytest.raises(
        TypeError, match=r"undesired_texts must be a list of strings; 1 item\(s\) are not.*index 1 \(int\)"
    ):
        SASAProbe.fit(llama, tiny_tokenizer, DESIRED, ["fine", 3])
    with pytest.raises(ValueError, match="layer='best' is not supported; expected 'auto' or an integer"):
        SASAProbe.fit(llama, tiny_tokenizer, DESIRED, UNDESIRED, layer="best")
    with pytest.raises(ValueError, match="validation_fraction=1.0 is out of range"):
        SASAProbe.fit(llama, tiny_tokenizer, DESIRED, UNDESIRED, validation_fraction=1.0)


# ------------------------------------------------------------------------------------------------ the fitting recipe


def test_embeddings_of_several_layers_equal_one_layer_at_a_time(llama, tiny_tokenizer):
    texts = DESIRED + UNDESIRED
    stacked = last_token_hidden_states(llama, tiny_tokenizer, texts, layer=[1, 2, -1], batch_size=4)
    assert stacked.shape == (3, len(texts), 64)
    for index, layer in enumerate([1, 2, -1]):
        single = last_token_hidden_states(llama, tiny_tokenizer, texts, layer=layer, batch_size=4)
        torch.testing.assert_close(stacked[index], single, atol=1e-5, rtol=0)


def test_separability_is_the_pairwise_ranking_probability():
    margins_d = torch.tensor([2.0, 0.5, 0.5, -1.0])
    margins_u = torch.tensor([0.5, -2.0, 1.0])
    pairs = [(d, u) for d in margins_d.tolist() for u in margins_u.tolist()]
    expected_auc = sum(1.0 if d > u else 0.5 if d == u else 0.0 for d, u in pairs) / len(pairs)
    result = separability(margins_d, margins_u)
    assert result.auc == pytest.approx(expected_auc)
    assert result.balanced_accuracy == pytest.approx((3 / 4 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="at least one margin per class"):
        separability(margins_d, torch.tensor([]))


def test_balanced_covariance_is_the_mean_of_the_class_covariances():
    generator = torch.Generator().manual_seed(0)
    x_d, x_u = torch.randn(30, 4, generator=generator, dtype=torch.float64), torch.randn(6, 4, generator=generator)
    x_u = x_u.double() * 3
    expected = (torch.cov(x_d.T) + torch.cov(x_u.T)) / 2
    torch.testing.assert_close(pooled_covariance(x_d, x_u, balanced=True), expected)
    pooled = torch.cat([x_d - x_d.mean(0), x_u - x_u.mean(0)])
    torch.testing.assert_close(pooled_covariance(x_d, x_u), pooled.T @ pooled / 34)


def test_auto_layer_is_the_most_separable_on_held_out_texts(llama, tiny_tokenizer):
    auto = SASAProbe.fit(llama, tiny_tokenizer, DESIRED * 2, UNDESIRED * 2, show_progress=False)
    by_layer = auto.fit_info["held_out_auc_by_layer"]
    assert set(by_layer) == {"1", "-1"}  # the tiny Llama has 2 layers: the input of layer 1, and the output
    assert auto.fit_info["layer_selection"] == "auto"
    assert by_layer[str(auto.layer)] == max(by_layer.values())
    for layer in (1, -1):  # each candidate, fitted alone on the same split, scores what the selection recorded
        alone = SASAProbe.fit(llama, tiny_tokenizer, DESIRED * 2, UNDESIRED * 2, layer=layer, show_progress=False)
        assert alone.fit_info["held_out_auc"] == pytest.approx(by_layer[str(layer)], abs=1e-6)
        if layer == auto.layer:
            torch.testing.assert_close(alone.direction, auto.direction)


def test_too_few_texts_for_auto_warns_and_uses_the_last_layer(llama, tiny_tokenizer):
    with pytest.warns(UserWarning, match="Too few texts to hold some out.*uses the last layer"):
        probe = SASAProbe.fit(llama, tiny_tokenizer, DESIRED[:2], UNDESIRED[:1], show_progress=False)
    assert probe.layer == -1 and "held_out_auc" not in probe.fit_info


def test_a_probe_that_separates_nothing_warns(llama, tiny_tokenizer):
    from hf_ext.testing import corpus_lines

    lines = [line for line in corpus_lines() if line.strip()][:40]
    shuffled = random.Random(3).sample(lines, len(lines))  # labels that have nothing to do with the texts
    with pytest.warns(UserWarning, match="barely separates the two kinds of text: held-out AUC"):
        SASAProbe.fit(llama, tiny_tokenizer, shuffled[:20], shuffled[20:], validation_fraction=0.5, seed=1)


def test_word_prefixes_keep_the_text_as_written():
    assert word_prefixes("  You are  a fool.", 2) == ["  You are", "  You are  a", "  You are  a fool."]
    assert word_prefixes("one", 2) == [] and word_prefixes("one two", 1) == ["one", "one two"]


def _keyword_judge(texts, prompts):
    return [1.0 if "idiot" in text or "hate" in text else 0.0 for text in texts]


def test_fit_from_judge_labels_every_prefix_with_the_judge(llama, tiny_tokenizer):
    corpus = DESIRED + UNDESIRED
    probe = SASAProbe.fit_from_judge(llama, tiny_tokenizer, _keyword_judge, corpus, layer=-1, show_progress=False)
    prefixes = list(dict.fromkeys(p for text in corpus for p in word_prefixes(text, 2)))
    undesired = [p for p in prefixes if _keyword_judge([p], [""])[0] == 1.0]
    desired = [p for p in prefixes if p not in undesired]
    assert (probe.fit_info["num_desired"], probe.fit_info["num_undesired"]) == (len(desired), len(undesired))
    assert probe.fit_info["source_texts"] == len(corpus) and probe.fit_info["labelled_by"] == "_keyword_judge"
    # with the layer fixed, the final fit is the labelled fit on the same prefixes
    expected = SASAProbe.fit(llama, tiny_tokenizer, desired, undesired, layer=-1, show_progress=False)
    torch.testing.assert_close(probe.direction, expected.direction)
    torch.testing.assert_close(probe.midpoint, expected.midpoint)


def test_fit_from_judge_on_the_models_own_continuations(llama, tiny_tokenizer):
    seen = []

    def judge(texts, prompts):
        seen.extend(zip(prompts, texts))
        return [float(i % 3 == 0) for i in range(len(texts))]

    prompts = ["The cat", "You are", "We walked", "Thank you"]
    probe = SASAProbe.fit_from_judge(
        llama, tiny_tokenizer, judge, prompts=prompts, num_continuations=2, max_new_tokens=6, show_progress=False
    )
    assert probe.fit_info["continuations_per_prompt"] == 2 and probe.fit_info["source_texts"] <= 8
    assert {prompt for prompt, _ in seen} <= set(prompts)  # the judge sees each continuation with its own prompt
    assert probe.fit_info["num_desired"] + probe.fit_info["num_undesired"] == len(seen)


def test_fit_from_judge_bad_input(llama, tiny_tokenizer):
    with pytest.raises(ValueError, match="Give texts .*, prompts .*, or both"):
        SASAProbe.fit_from_judge(llama, tiny_tokenizer, _keyword_judge)
    with pytest.raises(ValueError, match="judge must be a callable"):
        SASAProbe.fit_from_judge(llama, tiny_tokenizer, "profanity", DESIRED)
    with pytest.raises(ValueError, match="judge labelled no text undesired"):
        SASAProbe.fit_from_judge(llama, tiny_tokenizer, _keyword_judge, DESIRED)
    with pytest.raises(ValueError, match="Got 1 prompts for 5 texts"):
        SASAProbe.fit_from_judge(llama, tiny_tokenizer, _keyword_judge, DESIRED, prompts=["x"])


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_prefix_states_from_one_forward_equal_each_prefix_alone(llama, tiny_llama_path, padding_side):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path, padding_side=padding_side)
    texts = ["Prompt: " + UNDESIRED[2], DESIRED[2]]
    ends = [[len(p) for p in word_prefixes(text, 2)] for text in texts]
    prefixes = [text[:end] for text, text_ends in zip(texts, ends) for end in text_ends]
    for layer in (1, -1, [1, -1]):
        got = prefix_hidden_states(llama, tokenizer, texts, ends, layer=layer, batch_size=2)
        if isinstance(layer, list):
            expected = torch.stack([last_token_hidden_states(llama, tokenizer, prefixes, layer=i) for i in layer])
        else:
            expected = last_token_hidden_states(llama, tokenizer, prefixes, layer=layer)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="Got 1 lists of prefix ends for 2 texts"):
        prefix_hidden_states(llama, tokenizer, texts, ends[:1])


@pytest.mark.cuda
def test_probe_fit_and_margins_on_a_model_split_across_cpu_and_cuda(tiny_llama_path):
    """`device_map` with the embeddings on the CPU and the decoder layers on the GPU: the hidden states of
    different layers live on different devices, and so must the indices that read them."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path, padding_side="left")
    good = ["Thank you, that was kind.", "We walked along the river.", "A cup of tea and a book."]
    bad = ["You are a stupid idiot.", "I hate you and your face.", "Shut up, loser."]
    single = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers": 0,
        "model.norm": 0,
        "lm_head": 0,
    }
    split = AutoModelForCausalLM.from_pretrained(tiny_llama_path, device_map=device_map).eval()
    expected = SASAProbe.fit(single, tokenizer, good, bad, layer=1, show_progress=False)
    probe = SASAProbe.fit(split, tokenizer, good, bad, layer=1, show_progress=False)
    torch.testing.assert_close(probe.direction.cpu(), expected.direction.cpu(), atol=1e-4, rtol=1e-4)
