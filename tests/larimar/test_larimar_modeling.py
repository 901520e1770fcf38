"""LarimarConfig / LarimarModel / LarimarForCausalLM: registration, construction, saving, the memory slot, generation."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache

from hf_ext._compat import cache_kwargs
from hf_ext.larimar.configuration_larimar import LarimarConfig
from hf_ext.larimar.modeling_larimar import LarimarForCausalLM, LarimarModel


# Config ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latent_size", 0, "latent_size=0 is out of range; expected an integer >= 1"),
        ("memory_size", -3, "memory_size=-3 is out of range"),
        ("pinv_method", "svd", "pinv_method='svd' is not supported; expected one of \\['exact', 'ben_israel'\\]"),
        ("memory_dtype", "float16", "memory_dtype='float16' is not supported"),
        ("w_logvar_mode", "matrix", "w_logvar_mode='matrix' is not supported"),
        ("pooling", "max", "pooling='max' is not supported"),
        (
            "scope_threshold",
            2.5,
            "scope_threshold=2.5 is out of range; expected a number in \\[0, 2\\] or None \\(a cosine distance\\)",
        ),
        ("memory_ridge", 0.0, "memory_ridge=0.0 is out of range; expected a number > 0"),
        ("episode_size", 1, "episode_size=1 is out of range; expected an integer >= 2"),
        ("kl_beta", -1.0, "kl_beta=-1.0 is out of range; expected a number >= 0"),
        ("query_weight", -0.5, "query_weight=-0.5 is out of range"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LarimarConfig(**{field: value})


def test_config_round_trip_and_sub_configs(tmp_path, tiny_bert_path, tiny_llama_path):
    encoder = AutoConfig.from_pretrained(tiny_bert_path)
    decoder = AutoConfig.from_pretrained(tiny_llama_path)
    config = LarimarConfig(encoder=encoder, decoder=decoder, latent_size=64, memory_size=80, scope_threshold=None)
    assert config.get_text_config() is config.decoder  # generation reads the decoder's vocabulary and special tokens
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "larimar" and "auto_map" not in saved  # no trust_remote_code involved
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, LarimarConfig)
    assert loaded.encoder.model_type == "bert" and loaded.decoder.model_type == "llama"
    assert loaded.latent_size == 64 and loaded.memory_size == 80 and loaded.scope_threshold is None
    assert loaded.decoder.to_dict() == config.decoder.to_dict()
    # Default sub-configs are BERT and GPT-2, as in the paper.
    default = LarimarConfig()
    assert (default.encoder.model_type, default.decoder.model_type) == ("bert", "gpt2")
    with pytest.raises(ValueError, match="encoder-decoder; Larimar needs a causal LM"):
        LarimarConfig(decoder={"model_type": "t5"})


_TINY_CONFIG = (
    "config = AutoConfig.for_model('larimar', latent_size=8, memory_size=8, w_logvar_mode='scalar',\n"
    "    encoder={'model_type': 'bert', 'hidden_size': 16, 'num_hidden_layers': 1, 'num_attention_heads': 2,\n"
    "             'intermediate_size': 32, 'vocab_size': 50},\n"
    "    decoder={'model_type': 'gpt2', 'n_embd': 16, 'n_layer': 1, 'n_head': 2, 'vocab_size': 50})\n"
)


def _run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_import_registers_with_the_auto_classes_and_stays_lazy():
    code = (
        "import sys, hf_ext\n"
        "cheap = not {'torch', 'transformers'} & set(sys.modules)\n"
        "from transformers import AutoConfig, AutoModel, AutoModelForCausalLM\n"
        + _TINY_CONFIG
        + "lazy = 'hf_ext.larimar.modeling_larimar' not in sys.modules\n"
        "model = AutoModelForCausalLM.from_config(config)\n"
        "base = AutoModel.from_config(config)\n"
        "from hf_ext.larimar.modeling_larimar import LarimarForCausalLM, LarimarModel\n"
        "print(cheap, lazy, type(config).__name__, type(model) is LarimarForCausalLM, type(base) is LarimarModel,\n"
        "      AutoModelForCausalLM._model_mapping[type(config)] is LarimarForCausalLM)\n"
    )
    assert _run(code) == ["True", "True", "LarimarConfig", "True", "True", "True"]
    # transformers' Auto classes imported before hf_ext: registered at once.
    code = (
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "import hf_ext\n" + _TINY_CONFIG + "print(type(AutoModelForCausalLM.from_config(config)).__name__)\n"
    )
    assert _run(code) == ["LarimarForCausalLM"]


# Construction, saving, loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_built_from_pretrained_encoder_and_decoder(
    family, larimar_factory, tiny_bert_path, tiny_gpt2_path, tiny_llama_path, tmp_path
):
    model = larimar_factory(family)
    decoder_path = {"gpt2": tiny_gpt2_path, "llama": tiny_llama_path}[family]
    reference = AutoModelForCausalLM.from_pretrained(decoder_path)
    encoder = AutoModel.from_pretrained(tiny_bert_path)
    reference_base = reference.get_submodule(reference.base_model_prefix)
    for name, tensor in reference_base.state_dict().items():
        assert torch.equal(model.model.decoder.state_dict()[name], tensor), name
    for name, tensor in encoder.state_dict().items():
        if name.startswith("pooler."):  # unused with the fixture's pooling="mean": dropped
            assert name not in model.model.encoder.state_dict()
            continue
        assert torch.equal(model.model.encoder.state_dict()[name], tensor), name
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)
    # GPT-2 ties its head to its input embeddings; the tiny Llama does not; Larimar keeps whichever it got.
    tied = model.lm_head.weight is model.get_input_embeddings().weight
    assert tied == (family == "gpt2")

    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is LarimarForCausalLM
    assert (loaded.lm_head.weight is loaded.get_input_embeddings().weight) == tied
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is LarimarModel
    torch.testing.assert_close(base.latent_projection.weight, model.model.latent_projection.weight)

    ids = torch.tensor([[1, 40, 41, 42, 43]])
    latent = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        loaded(input_ids=ids, memory_latent=latent).logits, model(input_ids=ids, memory_latent=latent).logits
    )
    hidden = base(input_ids=ids, memory_latent=latent).last_hidden_state
    torch.testing.assert_close(model.lm_head(hidden), model(input_ids=ids, memory_latent=latent).logits)


def test_mismatched_parts_are_rejected(larimar_factory, tiny_bert_path):
    model = larimar_factory("gpt2")
    config = model.config
    wide = AutoModel.from_config(AutoConfig.from_pretrained(tiny_bert_path, hidden_size=96, intermediate_size=64))
    with pytest.raises(ValueError, match="The encoder has hidden_size=96 but the config's encoder has hidden_size=64"):
        LarimarForCausalLM(config, encoder=wide)
    with pytest.raises(ValueError, match="has a language-modeling head; load it with AutoModel"):
        LarimarForCausalLM.from_encoder_decoder_pretrained(
            encoder_model=AutoModelForCausalLM.from_config(config.decoder),
            decoder_model=AutoModelForCausalLM.from_config(config.decoder),
        )
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(ValueError, match="memory_latent has shape \\(1, 31\\); expected \\(1, 32\\)"):
        model(input_ids=ids, memory_latent=torch.zeros(1, 31))
    with pytest.raises(ValueError, match="attention_mask has shape \\(1, 4\\); expected \\(1, 3\\)"):
        model(input_ids=ids, attention_mask=torch.ones(1, 4, dtype=torch.long))


# The memory slot and generation -------------------------------------------------------------------------------------


def _manual_gpt2_logits(model, ids, latent):
    """The official conditioning spelled out on the plain GPT-2: the latent's projection added to every token
    embedding, one key / value per layer (the same vector, split over heads) before the tokens, positions from 1."""
    decoder = model.model.decoder
    config = decoder.config
    heads, head_dim = config.n_head, config.n_embd // config.n_head
    slot = latent @ model.model.prefix_projection.weight.T  # [B, layers * hidden]
    cache = DynamicCache()
    for layer in range(config.n_layer):
        kv = slot[:, layer * config.n_embd : (layer + 1) * config.n_embd].view(-1, heads, 1, head_dim)
        cache.update(kv, kv, layer)
    embeds = decoder.wte(ids) + (latent @ model.model.embedding_projection.weight.T)[:, None]
    positions = torch.arange(1, ids.shape[1] + 1)[None]
    hidden = decoder(inputs_embeds=embeds, position_ids=positions, use_cache=True, **cache_kwargs(cache))
    return model.lm_head(hidden.last_hidden_state)


def test_memory_slot_matches_the_official_conditioning(larimar_factory):
    model = larimar_factory("gpt2")
    ids = torch.tensor([[1, 30, 31, 32, 33, 34], [1, 50, 51, 52, 53, 54]])
    latent = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    expected = _manual_gpt2_logits(model, ids, latent)
    torch.testing.assert_close(model(input_ids=ids, memory_latent=latent, use_cache=False).logits, expected)
    torch.testing.assert_close(model(input_ids=ids, memory_latent=latent, use_cache=True).logits, expected)
    # The latent matters (through the slot and the embeddings), and zero is not "no slot".
    assert not torch.allclose(model(input_ids=ids, memory_latent=2 * latent).logits, expected, atol=1e-3)
    plain = model.lm_head(model.model.decoder(input_ids=ids).last_hidden_state)
    assert not torch.allclose(model(input_ids=ids).logits, plain, atol=1e-4)


def _greedy_without_cache(model, input_ids, attention_mask, latent, steps):
    for _ in range(steps):
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, memory_latent=latent, use_cache=False
        ).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        input_ids = torch.cat([input_ids, token], 1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(token)], 1)
    return input_ids


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generate_with_cache_equals_a_full_rerun_loop(family, larimar_factory, tiny_processor):
    model = larimar_factory(family)
    inputs = tiny_processor(["The morning train left the station", "Rivers carry sand", "Hello"])
    latent = torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
    generated = model.generate(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        memory_latent=latent,
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=None,
    )
    expected = _greedy_without_cache(model, inputs["input_ids"], inputs["attention_mask"], latent, 8)
    assert torch.equal(generated, expected)
    # Left padding: each row generates what it generates alone, without padding.
    for row in range(3):
        alone = tiny_processor(["The morning train left the station", "Rivers carry sand", "Hello"][row])
        single = model.generate(
            input_ids=alone["input_ids"],
            attention_mask=alone["attention_mask"],
            memory_latent=latent[row : row + 1],
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
        )
        assert torch.equal(single[0, -8:], generated[row, -8:])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generate_with_a_static_cache_equals_the_dynamic_cache(family, larimar_factory, tiny_processor):
    # A static cache (what `torch.compile` generation uses) holds the memory slot before the tokens.
    model = larimar_factory(family)
    inputs = tiny_processor(["The morning train left the station", "Rivers carry sand", "Hello"])
    latent = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    kwargs = {"max_new_tokens": 8, "do_sample": False, "eos_token_id": None, "memory_latent": latent}
    dynamic = model.generate(**inputs, **kwargs)
    static = model.generate(**inputs, **kwargs, cache_implementation="static")
    assert torch.equal(static, dynamic)
    assert torch.equal(dynamic, _greedy_without_cache(model, inputs["input_ids"], inputs["attention_mask"], latent, 8))
    # The cache is sized once for the longest call so far; a shorter call reuses it.
    short = model.generate(**inputs, **{**kwargs, "max_new_tokens": 3}, cache_implementation="static")
    assert torch.equal(short, dynamic[:, : inputs["input_ids"].shape[1] + 3])


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="compiling generate takes ~1 min of CPU (checked equal on a CPU by hand); transformers compiles static-cache "
    "generation by itself on CUDA",
)
def test_compiled_generation_equals_eager(larimar_factory, tiny_processor):
    from transformers import CompileConfig

    model = larimar_factory("llama").to("cuda")
    inputs = {k: v.to("cuda") for k, v in tiny_processor(["The morning train left the station", "Hello"]).items()}
    latent = torch.randn(2, 32, generator=torch.Generator().manual_seed(4)).to("cuda")
    kwargs = {"max_new_tokens": 6, "do_sample": False, "eos_token_id": None, "memory_latent": latent}
    eager = model.generate(**inputs, **kwargs)
    compiled = model.generate(**inputs, **kwargs, cache_implementation="static", compile_config=CompileConfig())
    assert torch.equal(compiled, eager)


def test_generate_reads_the_memory_with_its_queries(larimar_factory, tiny_processor):
    model = larimar_factory("llama", scope_threshold=None)
    model.write_memory(["The capital of France is Paris.", "Rivers carry sand to the sea."], processor=tiny_processor)
    inputs = tiny_processor(["The capital of France is"])
    latent = model.read_memory(["The capital of France is"], processor=tiny_processor)
    from_memory = model.generate(**inputs, max_new_tokens=6, do_sample=False, eos_token_id=None)
    explicit = model.generate(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        memory_latent=latent,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=None,
    )
    assert torch.equal(from_memory, explicit)
    # Beams and several returned sequences carry the latent along.
    beams = model.generate(**inputs, max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
    assert beams.shape[0] == 2


@pytest.mark.slow
def test_decoder_loads_in_4bit_on_cpu(larimar_factory, tiny_processor, tmp_path):
    from bitsandbytes.nn import Linear4bit

    from hf_ext.quantization import load_quantized

    model = larimar_factory("llama")
    model.save_pretrained(tmp_path)
    quantized = load_quantized(tmp_path, bits=4, device_map={"": "cpu"})
    assert type(quantized) is LarimarForCausalLM
    assert isinstance(quantized.model.decoder.layers[0].self_attn.q_proj, Linear4bit)
    # Larimar's own layers stay in float32, unquantized.
    for name in ("latent_projection", "prefix_projection", "embedding_projection"):
        layer = getattr(quantized.model, name)
        assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32
    inputs = tiny_processor(["The morning train left the station"])
    latent = torch.randn(1, 32, generator=torch.Generator().manual_seed(3))
    full = model(input_ids=inputs["input_ids"], memory_latent=latent).logits
    four_bit = quantized(input_ids=inputs["input_ids"], memory_latent=latent).logits
    assert torch.corrcoef(torch.stack([full.flatten(), four_bit.flatten()]))[0, 1] > 0.9
    generated = quantized.generate(
        **inputs, memory_latent=latent, max_new_tokens=5, do_sample=False, eos_token_id=None
    )
    expected = _greedy_without_cache(quantized, inputs["input_ids"], inputs["attention_mask"], latent, 5)
    assert torch.equal(generated, expected)
