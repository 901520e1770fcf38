import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from hf_ext.testing import (
    TESTING_PREFIX,
    build_tiny_causal_lm,
    build_tiny_encoder,
    build_tokenizer,
    corpus_lines,
    resolve_model_name_or_path,
    tiny_model_dir,
)


def test_tokenizer_is_deterministic_and_complete(tiny_tokenizer):
    again = build_tokenizer()
    assert again.get_vocab() == tiny_tokenizer.get_vocab()
    assert len(tiny_tokenizer) == 1024
    specials = {tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id}
    assert None not in specials and len(specials) == 3


@pytest.mark.parametrize("text", ["The capital of France is Paris.", "naïve café — 東京 🚀", "  spaced\tand\nlines "])
def test_tokenizer_round_trips_any_text(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.unk_token_id not in ids
    assert tiny_tokenizer.decode(ids) == text


def test_tokenizer_learned_the_shipped_corpus(tiny_tokenizer):
    # A BPE trained on the corpus encodes it far more compactly than bytes.
    text = " ".join(corpus_lines()[:50])
    assert len(tiny_tokenizer(text)["input_ids"]) < len(text.encode()) / 2.5


def test_chat_template_marks_only_assistant_tokens(tiny_tokenizer):
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello, friend"}]
    out = tiny_tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tiny_tokenizer.decode(masked) == "Hello, friend<|im_end|>"
    prompt = tiny_tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_causal_lm_build_is_seeded(family):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = build_tiny_causal_lm(family, seed=1).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state), "building must not disturb the global RNG"
    b = build_tiny_causal_lm(family, seed=1).state_dict()
    c = build_tiny_causal_lm(family, seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point() and a[k].std() > 0)


def test_encoder_build_is_seeded():
    a = build_tiny_encoder(seed=3).state_dict()
    b = build_tiny_encoder(seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("fixture", "model_type"), [("tiny_llama_path", "llama"), ("tiny_gpt2_path", "gpt2")])
def test_causal_lm_loads_generates_and_trains(request, fixture, model_type):
    path = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == model_type
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    # generate (greedy, with the KV cache) equals a loop of full forwards taking the argmax
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    generated = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None)
    expected = ids
    with torch.no_grad():
        for _ in range(6):
            next_id = model(expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_id], dim=1)
    assert torch.equal(generated, expected)

    # a few optimizer steps on one batch lower its loss
    model.train()
    batch = tokenizer(["The capital of France is Paris."] * 2, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_encoder_loads_and_trains(tiny_bert_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    model = AutoModel.from_pretrained(tiny_bert_path)
    assert model.config.model_type == "bert"
    batch = tokenizer(["a short sentence", "another, somewhat longer sentence"], return_tensors="pt", padding=True)
    out = model(**batch)
    assert out.last_hidden_state.shape == (2, batch["input_ids"].shape[1], model.config.hidden_size)
    assert out.pooler_output.shape == (2, model.config.hidden_size)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    target = torch.ones(2, model.config.hidden_size)
    first = torch.nn.functional.mse_loss(model(**batch).pooler_output, target)
    first.backward()
    optimizer.step()
    second = torch.nn.functional.mse_loss(model(**batch).pooler_output, target)
    assert second < first


@pytest.mark.parametrize(
    ("fixture", "auto_class"),
    [
        ("tiny_llama_path", AutoModelForCausalLM),
        ("tiny_gpt2_path", AutoModelForCausalLM),
        ("tiny_bert_path", AutoModel),
    ],
)
@pytest.mark.parametrize(("bits", "max_relative_error"), [(4, 0.25), (8, 0.05)])
def test_models_load_quantized_on_cpu(request, fixture, auto_class, bits, max_relative_error):
    import bitsandbytes as bnb

    path = request.getfixturevalue(fixture)
    reference = auto_class.from_pretrained(path)
    config = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        if bits == 4
        else BitsAndBytesConfig(load_in_8bit=True)
    )
    quantized = auto_class.from_pretrained(path, quantization_config=config, device_map={"": "cpu"})
    layer_type = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    assert any(isinstance(m, layer_type) for m in quantized.modules())
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = reference(input_ids=ids)[0], quantized(input_ids=ids)[0]
    relative_error = ((actual - expected).norm() / expected.norm()).item()
    assert 0 < relative_error < max_relative_error


def test_resolve_model_name_or_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_EXT_CACHE", str(tmp_path))
    resolved = resolve_model_name_or_path(TESTING_PREFIX + "tiny-gpt2")
    assert resolved.startswith(str(tmp_path)) and (tmp_path / "tiny").is_dir()
    assert AutoModelForCausalLM.from_pretrained(resolved).config.model_type == "gpt2"
    assert resolve_model_name_or_path("meta-llama/Llama-3-8B") == "meta-llama/Llama-3-8B"
    with pytest.raises(ValueError, match="Unknown fixture model 'hf-ext-testing/tiny-nope'") as error:
        resolve_model_name_or_path(TESTING_PREFIX + "tiny-nope")
    # The message lists every fixture, the task models included.
    for name in ("tiny-llama", "tiny-bert", "sasa-planted", "seal-aligned", "mergealign-base", "mergealign-aligned"):
        assert f"'hf-ext-testing/{name}'" in str(error.value)


def test_fixture_ids_resolve_inside_a_configuration(monkeypatch):
    from hf_ext import testing

    monkeypatch.setattr(testing, "resolve_model_name_or_path", lambda name: f"/cache/{name.rsplit('/', 1)[1]}")
    config = {
        "base_model": "hf-ext-testing/mergealign-base",
        "models": [{"model": "hf-ext-testing/tiny-llama+hf-ext-testing/tiny-gpt2", "parameters": {"role": "domain"}},
                   {"model": "org/model", "parameters": {"role": "alignment", "weight": 0.5}}],
    }  # fmt: skip
    assert testing.resolve_fixture_ids(config) == {
        "base_model": "/cache/mergealign-base",
        "models": [{"model": "/cache/tiny-llama+/cache/tiny-gpt2", "parameters": {"role": "domain"}},
                   {"model": "org/model", "parameters": {"role": "alignment", "weight": 0.5}}],
    }  # fmt: skip


def test_unknown_fixture_dataset_lists_the_known_ones():
    from hf_ext.testing import FIXTURE_DATASETS, load_fixture_dataset

    with pytest.raises(ValueError, match="Unknown fixture dataset 'hf-ext-testing/nope'") as error:
        load_fixture_dataset("hf-ext-testing/nope")
    assert all(name in str(error.value) for name in FIXTURE_DATASETS)


def test_tiny_model_dir_builds_once(tmp_path):
    first = tiny_model_dir("tiny-bert", cache_dir=tmp_path)
    stamp = (first / "config.json").stat().st_mtime_ns
    again = tiny_model_dir("tiny-bert", cache_dir=tmp_path)
    assert again == first and (again / "config.json").stat().st_mtime_ns == stamp
    left = [p.name for p in (tmp_path / "tiny").iterdir() if p.suffix != ".lock"]
    assert left == [first.name]  # no staging folders left behind
