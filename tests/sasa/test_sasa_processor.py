"""SASALogitsProcessor: exact candidate margins on generate's cache and on its own, the spec's oracles, composition,
beam search, quantized and PEFT models, and bad input."""

import gc

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessorList,
    NoBadWordsLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)

from hf_ext.sasa import SASALogitsProcessor, SASAProbe
from hf_ext.sasa.hidden_states import positions_from_mask
from hf_ext.sasa.sampling import candidate_set


PROMPTS = ["The weather today is", "Hi", "Once upon a time there was a small"]


def _model(path, attn="sdpa"):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_path):
    return AutoTokenizer.from_pretrained(tiny_llama_path, padding_side="left")


@pytest.fixture(scope="module")
def llama(tiny_llama_path):
    return _model(tiny_llama_path)


@pytest.fixture(scope="module")
def probe(llama, tokenizer):
    good = ["Thank you, that was kind.", "We walked along the river.", "A cup of tea and a book."]
    bad = ["You are a stupid idiot.", "I hate you and your face.", "Shut up, loser."]
    return SASAProbe.fit(llama, tokenizer, good, bad, show_progress=False)


@pytest.fixture(scope="module")
def batch(tokenizer):
    return tokenizer(PROMPTS, return_tensors="pt", padding=True)


def _oracle_margins(model, probe, prefix, prefix_mask, candidates, layer=None):
    """Margins of prefix + v for every candidate v, each as a separate full sequence through the full causal LM, at
    the probe's layer (or `layer`)."""
    layer = probe.layer if layer is None else layer
    rows, k = candidates.shape
    seqs = torch.cat([prefix.repeat_interleave(k, 0), candidates.reshape(-1, 1)], dim=1)
    mask = torch.cat([prefix_mask.repeat_interleave(k, 0), torch.ones(rows * k, 1, dtype=torch.long)], dim=1)
    with torch.no_grad():
        out = model(
            input_ids=seqs, attention_mask=mask, position_ids=positions_from_mask(mask), output_hidden_states=True
        )
    return probe.margin(out.hidden_states[layer][:, -1]).view(rows, k)


def _check_trace_against_oracle(model, probe, trace, sequences, prompt_mask, steps=3):
    prompt_len = prompt_mask.shape[1]
    worst = 0.0
    for step in trace[:steps]:
        length = step.input_length
        mask = torch.cat([prompt_mask, torch.ones(len(prompt_mask), length - prompt_len, dtype=torch.long)], 1)
        expected = _oracle_margins(model, probe, sequences[:, :length], mask, step.candidate_ids)
        diff = (expected - step.margins).abs().masked_fill(~step.valid, 0)
        worst = max(worst, float(diff.max()))
    return worst


@pytest.mark.parametrize("family,attn", [("llama", "eager"), ("llama", "sdpa"), ("gpt2", "eager"), ("gpt2", "sdpa")])
def test_margins_on_generates_cache_equal_separate_full_forwards(
    tiny_llama_path, tiny_gpt2_path, probe, batch, tokenizer, family, attn
):
    model = _model(tiny_llama_path if family == "llama" else tiny_gpt2_path, attn)
    if family == "gpt2":  # a probe in GPT-2's own hidden space (same tokenizer)
        probe = SASAProbe.fit(model, tokenizer, ["A kind word.", "Thank you."], ["You idiot.", "Shut up."])
    sasa = SASALogitsProcessor(model, probe, beta=5.0, top_p=0.95, max_candidates=40, record_trace=True)
    torch.manual_seed(0)
    out = model.generate(**batch, do_sample=True, max_new_tokens=6, logits_processor=LogitsProcessorList([sasa]))
    assert sasa.cache_usage == {"generate": 6, "own": 0}  # every step reused generate's cache
    assert all(step.source == "generate" for step in sasa.trace)
    assert sasa.trace[0].candidate_ids.shape[1] > 10
    assert _check_trace_against_oracle(model, probe, sasa.trace, out, batch["attention_mask"]) <= 1e-5


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_intermediate_layer_margins_equal_full_forwards_and_leave_the_cache_intact(
    tiny_llama_path, tiny_gpt2_path, batch, tokenizer, family
):
    # an intermediate layer stops the candidate forward early: the margins must still be those of full forwards,
    # and generate's cache (all layers) must come back as it was, so the plain continuation is unchanged
    model = _model(tiny_llama_path if family == "llama" else tiny_gpt2_path)
    probe = SASAProbe.fit(model, tokenizer, ["A kind word.", "Thank you."], ["You idiot.", "Shut up."], layer=1)
    sasa = SASALogitsProcessor(model, probe, beta=0.0, top_p=0.95, max_candidates=None, record_trace=True)
    torch.manual_seed(0)
    out = model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=6, logits_processor=[sasa])
    torch.manual_seed(0)
    plain = model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=6, top_p=0.95)
    assert torch.equal(out, plain)
    assert sasa.cache_usage == {"generate": 6, "own": 0}
    prompt_mask, worst = batch["attention_mask"], 0.0
    for step in sasa.trace[:3]:
        length = step.input_length
        mask = torch.cat(
            [prompt_mask, torch.ones(len(prompt_mask), length - prompt_mask.shape[1], dtype=torch.long)], 1
        )
        expected = _oracle_margins(model, probe, out[:, :length], mask, step.candidate_ids, layer=1)
        worst = max(worst, float((expected - step.margins).abs().masked_fill(~step.valid, 0).max()))
    assert worst <= 1e-5


def test_own_cache_path_gives_the_same_generation_and_margins(llama, probe, batch):
    outputs, traces = [], []
    for use_generate_cache in (True, False):
        sasa = SASALogitsProcessor(llama, probe, beta=8.0, use_generate_cache=use_generate_cache, record_trace=True)
        torch.manual_seed(1)
        outputs.append(llama.generate(**batch, do_sample=True, max_new_tokens=8, logits_processor=[sasa]))
        traces.append(sasa.trace)
        assert sasa.cache_usage["own" if not use_generate_cache else "generate"] == 8
    assert torch.equal(outputs[0], outputs[1])
    for fast, own in zip(*traces):
        assert own.source == "own" and torch.equal(fast.candidate_ids, own.candidate_ids)
        torch.testing.assert_close(fast.margins, own.margins, atol=1e-5, rtol=0)
    assert _check_trace_against_oracle(llama, probe, traces[1], outputs[1], batch["attention_mask"]) <= 1e-5


def test_static_cache_falls_back_to_the_own_cache(tiny_llama_path, probe, batch):
    model = _model(tiny_llama_path)
    dynamic = SASALogitsProcessor(model, probe, beta=20.0, record_trace=True)
    expected = model.generate(**batch, do_sample=False, max_new_tokens=5, logits_processor=[dynamic])
    static = SASALogitsProcessor(model, probe, beta=20.0, record_trace=True)
    out = model.generate(
        **batch, do_sample=False, max_new_tokens=5, logits_processor=[static], cache_implementation="static"
    )
    assert static.cache_usage == {"generate": 0, "own": 5}  # a static cache cannot be cropped: never touched
    assert torch.equal(out, expected)
    for a, b in zip(dynamic.trace, static.trace):
        torch.testing.assert_close(a.margins, b.margins, atol=1e-5, rtol=0)


def test_standalone_call_without_a_cache_uses_the_fallback(tiny_llama_path, probe, batch):
    model = _model(tiny_llama_path)
    sasa = SASALogitsProcessor(model, probe, beta=3.0, normalize="none", filter_non_candidates=False)
    input_ids = batch["input_ids"]
    with torch.no_grad():
        scores = model(**batch).logits[:, -1]
    sasa.reset()  # forget the forward above: a standalone call has no cache in hand
    processed = sasa(input_ids, scores)
    assert sasa.cache_usage == {"generate": 0, "own": 1}
    ids, valid = candidate_set(scores, top_p=0.9, max_candidates=50)
    margins = _oracle_margins(model, probe, input_ids, batch["attention_mask"], ids)
    expected = scores.clone().scatter_add(1, ids, torch.where(valid, 3.0 * margins, 0.0))
    torch.testing.assert_close(processed, expected, atol=1e-5, rtol=0)


def test_a_stale_cache_from_another_prefix_is_never_used(llama, probe, tokenizer):
    sasa = SASALogitsProcessor(llama, probe, beta=1.0)
    a = tokenizer(["The cat sat on the mat"], return_tensors="pt")["input_ids"]
    out = llama.generate(input_ids=a, max_new_tokens=2, do_sample=False, logits_processor=[sasa])
    assert sasa.cache_usage == {"generate": 2, "own": 0}
    # Same length and last token as the cache generate left behind (prompt + 1 token), another prefix.
    b = out[:, :-1].clone()
    b[:, [0, 1]] = b[:, [1, 0]]
    candidates = torch.tensor([[5, 6, 7]])
    got = sasa.candidate_margins(b, candidates)
    assert sasa.cache_usage == {"generate": 2, "own": 1}
    torch.testing.assert_close(
        got, _oracle_margins(llama, probe, b, torch.ones_like(b), candidates), atol=1e-5, rtol=0
    )
    # A forward of exactly `b` just before the call is reused (while its cache is alive).
    with torch.no_grad():
        kept = llama(input_ids=b, use_cache=True)  # noqa: F841
    again = sasa.candidate_margins(b, candidates)
    assert sasa.cache_usage == {"generate": 3, "own": 1}
    torch.testing.assert_close(again, got, atol=1e-5, rtol=0)


@pytest.mark.parametrize("filter_non_candidates", [False, True])
def test_beta_zero_is_plain_sampling_token_for_token(llama, probe, batch, filter_non_candidates):
    torch.manual_seed(3)
    plain = llama.generate(**batch, do_sample=True, temperature=0.7, top_p=0.8, top_k=None, max_new_tokens=10)
    sasa = SASALogitsProcessor(
        llama, probe, beta=0.0, top_p=0.8, temperature=0.7, max_candidates=None,
        filter_non_candidates=filter_non_candidates,
    )  # fmt: skip
    torch.manual_seed(3)
    # With filtering, SASA's nucleus replaces generate's top_p; without, generate's top_p applies as usual.
    top_p = None if filter_non_candidates else 0.8
    steered = llama.generate(
        **batch, do_sample=True, temperature=0.7, top_p=top_p, top_k=None, max_new_tokens=10, logits_processor=[sasa]
    )
    assert sasa.cache_usage["generate"] == 10  # the candidate forwards ran (and were cropped off) at every step
    assert torch.equal(plain, steered)


def test_beam_search_and_greedy(llama, probe, batch):
    plain = llama.generate(**batch, num_beams=3, do_sample=False, max_new_tokens=6)
    zero = SASALogitsProcessor(llama, probe, beta=0.0, filter_non_candidates=False)
    assert torch.equal(llama.generate(**batch, num_beams=3, max_new_tokens=6, logits_processor=[zero]), plain)
    assert zero.cache_usage["generate"] == 6 and zero.cache_usage["own"] == 0

    outputs = []
    for use_generate_cache in (True, False):
        sasa = SASALogitsProcessor(llama, probe, beta=20.0, use_generate_cache=use_generate_cache)
        outputs.append(llama.generate(**batch, num_beams=3, max_new_tokens=6, logits_processor=[sasa]))
    assert torch.equal(outputs[0], outputs[1])  # beams reorder rows: the own cache follows them

    greedy = SASALogitsProcessor(llama, probe, beta=20.0, record_trace=True)
    out = llama.generate(**batch, do_sample=False, max_new_tokens=5, logits_processor=[greedy])
    for step in greedy.trace:  # greedy picks the best candidate after the tilt
        tilted = torch.log(step.probs) + step.shift
        best = step.candidate_ids.gather(1, tilted.masked_fill(~step.valid, -float("inf")).argmax(-1, keepdim=True))
        assert torch.equal(best[:, 0], out[:, step.input_length])


def test_expected_margin_rises_monotonically_with_beta(planted, planted_probe, planted_task):
    model, tokenizer = planted
    enc = tokenizer(planted_task.prompts(6, seed=11), return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = model(**enc).logits[:, -1]
    for normalize in ("softmax", "none"):
        expected_margins = []
        for beta in (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0):
            sasa = SASALogitsProcessor(model, planted_probe, beta=beta, normalize=normalize)
            ids, valid = candidate_set(scores, top_p=0.9, max_candidates=50)
            margins = sasa.candidate_margins(enc["input_ids"], ids)
            probs = sasa(enc["input_ids"], scores.clone()).softmax(-1).gather(1, ids)
            expected_margins.append((probs * margins.masked_fill(~valid, 0)).sum(-1))
        stacked = torch.stack(expected_margins)
        assert torch.all(stacked[1:] >= stacked[:-1] - 1e-6), normalize
        assert torch.all(stacked[-1] > stacked[0])


def test_the_shift_depends_on_the_context(planted, planted_probe):
    model, tokenizer = planted
    sasa = SASALogitsProcessor(model, planted_probe, beta=1.0, normalize="none")
    a0, neutral = tokenizer.convert_tokens_to_ids(["a0", "n10"])
    candidates = torch.tensor([[a0, neutral]])
    after_trigger = tokenizer(["n03 n07 n12 t1"], return_tensors="pt")["input_ids"]
    benign = tokenizer(["n03 n07 n12 n20"], return_tensors="pt")["input_ids"]
    m_trigger = sasa.candidate_margins(after_trigger, candidates)[0]
    m_benign = sasa.candidate_margins(benign, candidates)[0]
    # the same word is pushed away after a trigger and not in benign text: no static vocabulary bias does that
    assert m_trigger[0] < 0 < m_benign[0]
    assert m_trigger[0] < m_trigger[1] and (m_benign[0] - m_benign[1]).abs() < (m_trigger[1] - m_trigger[0]) / 3


def test_composes_with_other_processors_and_never_uses_the_rng(llama, probe, batch, tokenizer):
    banned = 317
    sasa = SASALogitsProcessor(llama, probe, beta=5.0, top_p=1.0, max_candidates=30, record_trace=True)
    processors = LogitsProcessorList(
        [
            NoBadWordsLogitsProcessor([[banned]], eos_token_id=tokenizer.eos_token_id),
            sasa,
            RepetitionPenaltyLogitsProcessor(1.3),
        ]
    )
    with torch.no_grad():
        scores = llama(**batch).logits[:, -1]
    scores[:, banned] = 50.0  # the top token, were it not banned
    state = torch.get_rng_state()
    processed = processors(batch["input_ids"], scores)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.all(processed[:, banned] == -float("inf"))
    assert not (sasa.trace[-1].candidate_ids[sasa.trace[-1].valid] == banned).any()
    out = llama.generate(**batch, do_sample=True, max_new_tokens=8, logits_processor=processors)
    assert not (out[:, batch["input_ids"].shape[1] :] == banned).any()
    assert sasa.cache_usage["generate"] == 8
    assert SASALogitsProcessor.supports_continuous_batching is False


def test_trace_plot_and_chosen_margins(tmp_path, llama, probe, batch):
    sasa = SASALogitsProcessor(llama, probe, beta=5.0, record_trace=True)
    torch.manual_seed(4)
    out = llama.generate(**batch, do_sample=True, max_new_tokens=5, logits_processor=[sasa])
    series = sasa.trace.margins_along(out, row=2)
    assert len(series["chosen"]) == 5
    for step, chosen in zip(sasa.trace, series["chosen"]):
        length = step.input_length
        expected = _oracle_margins(llama, probe, out[2:3, :length], torch.ones(1, length, dtype=torch.long),
                                   out[2:3, length : length + 1])  # fmt: skip
        assert chosen == pytest.approx(float(expected), abs=1e-5)
        assert series["min"][step.input_length - sasa.trace[0].input_length] <= chosen
    for before, after in zip(series["expected_before"], series["expected_after"]):
        assert after >= before - 1e-6
    path = sasa.trace.plot(tmp_path / "margins.png", out, row=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hook_is_removed_with_the_processor(tiny_llama_path, probe):
    model = _model(tiny_llama_path)
    sasa = SASALogitsProcessor(model, probe)
    assert len(model._forward_hooks) == 1
    del sasa
    gc.collect()
    assert len(model._forward_hooks) == 0
    other = SASALogitsProcessor(model, probe)
    other.remove_hook()
    assert len(model._forward_hooks) == 0 and other.use_generate_cache is False


@pytest.mark.slow
def test_four_bit_model_on_cpu(tiny_llama_path, probe, batch):
    from hf_ext.quantization import load_quantized

    model = load_quantized(tiny_llama_path, bits=4, device_map={"": "cpu"}).eval()
    sasa = SASALogitsProcessor(model, probe, beta=5.0, record_trace=True)
    torch.manual_seed(0)
    out = model.generate(**batch, do_sample=True, max_new_tokens=4, logits_processor=[sasa])
    assert sasa.cache_usage == {"generate": 4, "own": 0}
    assert _check_trace_against_oracle(model, probe, sasa.trace, out, batch["attention_mask"], steps=2) <= 1e-4


def test_peft_model(tiny_llama_path, probe, batch):
    from peft import LoraConfig, get_peft_model

    base = _model(tiny_llama_path)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.eval()
    sasa = SASALogitsProcessor(peft_model, probe, beta=5.0, record_trace=True)
    torch.manual_seed(0)
    out = peft_model.generate(**batch, do_sample=True, max_new_tokens=4, logits_processor=[sasa])
    assert sasa.cache_usage == {"generate": 4, "own": 0}
    assert _check_trace_against_oracle(peft_model, probe, sasa.trace, out, batch["attention_mask"]) <= 1e-5


def test_bad_input_fails_at_construction(llama, probe, tiny_llama_path, tiny_bert_path):
    for kwargs, message in [
        ({"beta": -1.0}, r"beta=-1.0 is out of range; expected a number >= 0"),
        ({"beta": float("nan")}, r"beta=nan is out of range"),
        ({"top_p": 0.0}, r"top_p=0.0 is out of range; expected a number in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p=1.5 is out of range"),
        ({"temperature": 0}, r"temperature=0 is out of range"),
        ({"max_candidates": 0}, r"max_candidates=0 is out of range"),
        ({"normalize": "minmax"}, r"normalize='minmax' is not supported; expected one of \['softmax', 'none'\]"),
        ({"min_tokens_to_keep": 0}, r"min_tokens_to_keep=0"),
    ]:
        with pytest.raises(ValueError, match=message):
            SASALogitsProcessor(llama, probe, **kwargs)
    narrow = SASAProbe(torch.randn(32), torch.zeros(32))
    with pytest.raises(ValueError, match="fitted on hidden size 32 .* the model has hidden size 64"):
        SASALogitsProcessor(llama, narrow)
    from transformers import AutoModel, MistralConfig, MistralForCausalLM

    with pytest.raises(ValueError, match="cannot return hidden states"):
        SASALogitsProcessor(AutoModel.from_pretrained(tiny_bert_path), SASAProbe(torch.randn(64), torch.zeros(64)))
    flash = _model(tiny_llama_path)
    flash.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' is not supported"):
        SASALogitsProcessor(flash, probe)
    sliding = MistralForCausalLM(
        MistralConfig(
            vocab_size=100, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, sliding_window=8,
        )
    )  # fmt: skip
    with pytest.raises(ValueError, match="sliding-window"):
        SASALogitsProcessor(sliding, SASAProbe(torch.randn(64), torch.zeros(64)))
    with pytest.raises(ValueError, match="probe must be a SASAProbe"):
        SASALogitsProcessor(llama, {"direction": torch.randn(64)})


def test_a_model_in_train_mode_gives_eval_margins_and_draws_no_random_numbers(tiny_llama_path, probe, batch):
    """Generation inside a training loop: dropout would make the margins noisy and advance the sampler's generators
    (on CUDA too, which forking the CPU generator does not cover). The processor's forwards run in eval mode; the
    model's own train / eval flags are left as they were."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, attn_implementation="eager", attention_dropout=0.5)
    model.train()
    model.model.layers[0].eval()  # a mixed state, to be restored as it was
    flags = {name: m.training for name, m in model.named_modules()}
    sasa = SASALogitsProcessor(model, probe, beta=3.0, normalize="none", filter_non_candidates=False)
    with torch.no_grad():
        scores = model.eval()(**batch).logits[:, -1]
        model.train()
        model.model.layers[0].eval()
    sasa.reset()
    state = torch.get_rng_state()
    ids, valid = candidate_set(scores, top_p=0.9, max_candidates=50)
    margins = sasa.candidate_margins(batch["input_ids"], ids)
    assert torch.equal(torch.get_rng_state(), state)
    assert {name: m.training for name, m in model.named_modules()} == flags
    # Dropout on: two forwards differ. The processor's margins equal the eval-mode oracle, deterministically.
    with torch.no_grad():
        noisy = [model(**batch).logits[:, -1] for _ in range(2)]
    assert not torch.allclose(noisy[0], noisy[1])
    expected = _oracle_margins(model.eval(), probe, batch["input_ids"], batch["attention_mask"], ids)
    torch.testing.assert_close(margins.masked_fill(~valid, 0), expected.masked_fill(~valid, 0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_model_margins_match_float32(tiny_llama_path, probe, batch, half):
    """The same probe on the model in bf16 / fp16 weights: the margins (computed in float32 from the half-precision
    hidden states) stay within 5% of their spread over the candidates of the float32 model's, so the tilt ranks the
    candidates the same way up to near-ties. Measured: 1.1% (bf16, 8 significant bits), 0.15% (fp16)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, attn_implementation="sdpa", dtype=half).eval()
    with torch.no_grad():
        scores = model(**batch).logits[:, -1].float()
    ids, valid = candidate_set(scores, top_p=0.9, max_candidates=30)
    reference = _model(tiny_llama_path)
    expected = SASALogitsProcessor(reference, probe).candidate_margins(batch["input_ids"], ids)
    margins = SASALogitsProcessor(model, probe).candidate_margins(batch["input_ids"], ids)
    assert margins.dtype == torch.float32 and scores.isfinite().all()
    spread = expected[valid].std()
    error = (margins - expected).abs()[valid].max()
    assert 0 < error <= 0.05 * spread, (float(error), float(spread))
