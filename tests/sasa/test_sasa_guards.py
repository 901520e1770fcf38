"""The processor's guards: `generate` options that cut SASA's distribution again are warned about (or refused where
hf-ext builds the options itself), and a probe fitted on another model of the same width is refused."""

import json
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from hf_ext.sasa import SASALogitsProcessor, SASAProbe, sample_continuations
from hf_ext.sasa.fingerprint import compare_fingerprints, model_fingerprint
from hf_ext.sasa.guards import sampling_conflicts


GOOD = ["Thank you, that was kind.", "We walked along the river.", "A cup of tea and a book.", "Lovely day."]
BAD = ["You are a stupid idiot.", "I hate you and your face.", "Shut up, loser.", "Get lost, moron."]
PROMPTS = ["The weather today is", "Hi"]
PAD = 0


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_path):
    return AutoTokenizer.from_pretrained(tiny_llama_path, padding_side="left")


@pytest.fixture(scope="module")
def llama(tiny_llama_path):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()


@pytest.fixture(scope="module")
def probe(llama, tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a weak probe: six texts
        return SASAProbe.fit(llama, tokenizer, GOOD, BAD, layer=1, show_progress=False)


@pytest.fixture(scope="module")
def twin(llama):
    """Another tiny Llama of the same width (and the same name or path), with other weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = LlamaForCausalLM(llama.config).eval()
    assert model.config._name_or_path == llama.config._name_or_path
    return model


@pytest.fixture(scope="module")
def batch(tokenizer):
    return tokenizer(PROMPTS, return_tensors="pt", padding=True)


def _generate(model, batch, sasa, **kwargs):
    """The SASA warnings of one generate call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(0)
        model.generate(**batch, max_new_tokens=3, logits_processor=[sasa], pad_token_id=PAD, **kwargs)
    return [str(w.message) for w in caught if "SASALogitsProcessor:" in str(w.message)]


# ------------------------------------------------------------------------------------------- generate's options
def test_generate_options_that_cut_sasas_distribution_are_warned_about_once_per_call(llama, probe, batch):
    sasa = SASALogitsProcessor(llama, probe, beta=2.0, top_p=0.9, max_candidates=20)
    (top_p,) = _generate(llama, batch, sasa, do_sample=True, top_p=0.8, top_k=None)
    assert "top_p=0.8" in top_p and "leave generate's top_p unset (top_p=None)" in top_p
    (top_k,) = _generate(llama, batch, sasa, do_sample=True, top_k=5)
    assert "top_k=5" in top_k and "pass top_k=None to generate" in top_k and "max_candidates" in top_k
    (temperature,) = _generate(llama, batch, sasa, do_sample=True, temperature=0.7, top_k=None)
    assert "temperature=0.7" in temperature and "SASALogitsProcessor(..., temperature=0.7)" in temperature
    (min_p,) = _generate(llama, batch, sasa, do_sample=True, min_p=0.1, top_k=None)
    assert "min_p=0.1" in min_p and "leave min_p unset" in min_p
    # all at once: one warning per option, once per generate call (not once per step)
    assert len(_generate(llama, batch, sasa, do_sample=True, top_p=0.5, top_k=3, temperature=2.0)) == 3


def test_the_models_own_generation_defaults_are_checked_too(tiny_llama_path, probe, batch):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    model.generation_config.top_p = 0.95
    sasa = SASALogitsProcessor(model, probe, beta=2.0)
    (message,) = _generate(model, batch, sasa, do_sample=True)  # top_k: transformers' 50 = the cap, cuts nothing
    assert "top_p=0.95" in message
    assert _generate(model, batch, sasa, do_sample=True, top_p=None) == []


def test_right_options_greedy_and_beam_search_are_not_warned_about(llama, probe, batch):
    sasa = SASALogitsProcessor(llama, probe, beta=2.0, temperature=0.7, max_candidates=50)
    assert _generate(llama, batch, sasa, **sasa.sampling_kwargs()) == []
    assert _generate(llama, batch, sasa, do_sample=True, temperature=0.7) == []  # default top_k 50 = the cap
    assert _generate(llama, batch, sasa, do_sample=False) == []  # greedy: no warper runs
    assert _generate(llama, batch, sasa, do_sample=False, num_beams=2) == []
    # without filtering, generate's own nucleus is what cuts the tail: only the temperature must agree
    unfiltered = SASALogitsProcessor(llama, probe, beta=2.0, filter_non_candidates=False)
    assert _generate(llama, batch, unfiltered, do_sample=True, top_p=0.8) == []
    assert unfiltered.sampling_kwargs()["top_p"] == 0.9


def test_sampling_kwargs_refuse_options_that_cut_sasas_distribution(llama, tokenizer, probe):
    sasa = SASALogitsProcessor(llama, probe, beta=2.0, temperature=0.7, max_candidates=10)
    assert sasa.sampling_kwargs() == {"do_sample": True, "temperature": 0.7, "top_p": None, "top_k": None}
    assert sasa.sampling_kwargs(top_k=10, max_new_tokens=4)["max_new_tokens"] == 4  # top_k at the cap: harmless
    with pytest.raises(ValueError, match=r"top_p=0.8, a second nucleus cut .* leave generate's top_p unset"):
        sasa.sampling_kwargs(top_p=0.8)
    with pytest.raises(ValueError, match=r"temperature=1 but the SASALogitsProcessor computed its nucleus at "):
        sample_continuations(llama, tokenizer, PROMPTS, [sasa], sasa=True, temperature=1.0)
    with pytest.raises(ValueError, match=r"top_k=3, which keeps only the 3 highest"):
        sample_continuations(llama, tokenizer, PROMPTS, [sasa], sasa=True, generation_kwargs={"top_k": 3})
    with pytest.raises(ValueError, match="sasa=True needs a SASALogitsProcessor"):
        sample_continuations(llama, tokenizer, PROMPTS, [], sasa=True)


def test_sampling_conflicts_follow_generates_rules():
    settings = dict(top_p=0.9, temperature=1.0, max_candidates=50)
    assert sampling_conflicts({}, **settings) == []
    assert sampling_conflicts({"top_p": 1.0, "top_k": 0, "typical_p": 1.0, "epsilon_cutoff": 0.0}, **settings) == []
    assert sampling_conflicts({"top_k": 50, "temperature": None}, **settings) == []
    assert len(sampling_conflicts({"top_k": 50}, top_p=0.9, temperature=1.0, max_candidates=None)) == 1
    named = sampling_conflicts({"typical_p": 0.5, "eta_cutoff": 0.1, "top_h": 0.3}, **settings)
    assert [m.split()[3].split("=")[0] for m in named] == ["typical_p", "eta_cutoff", "top_h"]


# ------------------------------------------------------------------------------------------- the model's fingerprint
def test_a_probe_fitted_on_another_model_of_the_same_width_is_refused(llama, twin, probe, tmp_path):
    assert twin.config.hidden_size == llama.config.hidden_size == probe.hidden_size
    with pytest.raises(
        ValueError, match=r"fitted on '.*' \(weights fingerprint [0-9a-f]{16}\), but the model given is"
    ):
        SASALogitsProcessor(twin, probe)
    with pytest.raises(ValueError, match=r"sampled weight tensors differ: embedding") as error:
        SASALogitsProcessor(twin, probe)
    assert "Fit a probe on this model" in str(error.value)
    SASALogitsProcessor(llama, probe)  # its own model: accepted
    # the fingerprint is saved in the probe's JSON and checked on loading for a model, too
    probe.save_pretrained(tmp_path / "probe")
    saved = json.loads((tmp_path / "probe" / "sasa_probe.json").read_text())["model"]["fingerprint"]
    assert saved["layer"] == 1 and set(saved["samples"]) >= {"embedding", "layer.0.input_layernorm.weight"}
    with pytest.raises(ValueError, match="weights fingerprint"):
        SASAProbe.from_pretrained(tmp_path / "probe", model=twin)
    assert SASAProbe.from_pretrained(tmp_path / "probe", model=llama).model_info["fingerprint"] == saved


def test_the_same_model_in_half_precision_or_with_adapters_is_accepted(tiny_llama_path, probe):
    from peft import LoraConfig, get_peft_model

    for dtype in (torch.bfloat16, torch.float16):
        SASALogitsProcessor(AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=dtype), probe)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    SASALogitsProcessor(adapted, probe)


def test_a_probe_saved_without_a_fingerprint_is_warned_about_not_refused(llama, twin, probe):
    old = SASAProbe(probe.direction, probe.midpoint, layer=probe.layer, model_info=dict(probe.model_info))
    del old.model_info["fingerprint"]
    with pytest.warns(UserWarning, match="records no fingerprint of that model's weights"):
        SASALogitsProcessor(twin, old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a probe built by hand records no model at all: nothing to warn about
        SASALogitsProcessor(llama, SASAProbe(probe.direction, probe.midpoint, layer=probe.layer))


def test_fingerprints_compare_values_with_a_tolerance_above_rounding(llama, twin, tiny_llama_path):
    ours = model_fingerprint(llama, -1)
    assert "final.norm.weight" in ours["samples"] and "layer.1.mlp.up_proj.weight" in ours["samples"]
    assert compare_fingerprints(ours, model_fingerprint(llama, -1)) is None
    half = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.bfloat16)
    assert compare_fingerprints(ours, model_fingerprint(half, -1)) is None
    assert "embedding" in compare_fingerprints(ours, model_fingerprint(twin, -1))
    only_embedding = {"samples": {"embedding": ours["samples"]["embedding"]}}
    assert compare_fingerprints(only_embedding, {"samples": {}}) is None  # nothing in common: nothing to tell apart
