"""The alpha sweep: in-memory candidates equal written merges, 4-bit scoring, evaluators, selection, the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from mergealign_files import write_config
from safetensors.torch import load_file

from hf_ext.cli import main
from hf_ext.mergealign import AlphaSweepConfig, PerplexityEvaluator, merge, sweep_alpha
from hf_ext.mergealign.sweep import CandidateModel
from hf_ext.mergealign.weights import TaskVectors


def test_in_memory_candidates_are_bit_identical_to_written_merges(tmp_path, triple):
    candidate = CandidateModel(TaskVectors(triple["base"], triple["domain"], triple["aligned"]), device="cpu")
    for alpha, scale in ((0.3, 1.4), (0.75, 1.0)):  # the second overwrites the first in place
        merge(
            write_config(tmp_path / "c.yaml", triple, alpha=alpha, scale=scale),
            tmp_path / f"m{alpha}",
            copy_tokenizer=False,
            quiet=True,
            report=False,
        )
        written = load_file(tmp_path / f"m{alpha}" / "model.safetensors")
        candidate.set_weights(alpha, scale)
        state = candidate.model.state_dict()
        for name, tensor in written.items():
            assert torch.equal(state[name], tensor), name


def test_4bit_candidates_equal_the_written_merge_loaded_in_4bit(tmp_path, triple):
    from hf_ext.quantization import load_quantized

    merge(
        write_config(tmp_path / "c.yaml", triple, alpha=0.6, scale=1.2),
        tmp_path / "m",
        copy_tokenizer=False,
        quiet=True,
        report=False,
    )
    reference = load_quantized(tmp_path / "m", bits=4, device_map={"": "cpu"})
    candidate = CandidateModel(
        TaskVectors(triple["base"], triple["domain"], triple["aligned"]), load_in_4bit=True, device="cpu"
    )
    candidate.set_weights(0.2, 1.0)
    candidate.set_weights(0.6, 1.2)
    import bitsandbytes as bnb

    quantized = [n for n, m in candidate.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 3 * 7
    for name in quantized:
        ours, theirs = candidate.model.get_submodule(name).weight, reference.get_submodule(name).weight
        assert torch.equal(ours.data, theirs.data), name
        dequantized = bnb.functional.dequantize_4bit(ours.data, ours.quant_state)
        assert torch.equal(dequantized, bnb.functional.dequantize_4bit(theirs.data, theirs.quant_state)), name
    inputs = torch.tensor([[1, 17, 300, 42, 9]])
    with torch.no_grad():
        torch.testing.assert_close(candidate.model(inputs).logits, reference(inputs).logits, atol=0, rtol=0)


@pytest.mark.cuda
def test_candidates_merged_on_the_gpu_equal_the_written_merge(tmp_path, triple):
    """The merge runs where the weights live. Elementwise float32 on the GPU may fuse a multiply-add (one rounding
    instead of two): at most one float32 unit in the last place from the CPU-written merge."""
    from transformers import AutoModelForCausalLM

    merge(
        write_config(tmp_path / "c.yaml", triple, alpha=0.6, scale=1.2),
        tmp_path / "m",
        copy_tokenizer=False,
        quiet=True,
        report=False,
    )
    written = load_file(tmp_path / "m" / "model.safetensors")
    candidate = CandidateModel(TaskVectors(triple["base"], triple["domain"], triple["aligned"]), device="cuda")
    candidate.set_weights(0.6, 1.2)
    state = candidate.model.state_dict()
    for name, tensor in written.items():
        assert state[name].device.type == "cuda"
        torch.testing.assert_close(state[name].cpu(), tensor, atol=1e-30, rtol=2 * torch.finfo(torch.float32).eps)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "m").to("cuda")
    inputs = torch.tensor([[1, 17, 300, 42, 9]], device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(candidate.model(inputs).logits, reference(inputs).logits, atol=1e-5, rtol=1e-5)


def _distance_evaluators(triple):
    """safety = -||theta - theta_A||, domain = -||theta - theta_D||: along the line of merges (scale 1) these are
    exactly -alpha * c and -(1 - alpha) * c with c = ||theta_D - theta_A||."""
    aligned, domain = (load_file(triple[k] / "model.safetensors") for k in ("aligned", "domain"))

    def distance(model, reference):
        state = model.state_dict()
        return math.sqrt(sum(float(((state[n].double() - t.double()) ** 2).sum()) for n, t in reference.items()))

    c = math.sqrt(sum(float(((domain[n].double() - t.double()) ** 2).sum()) for n, t in aligned.items()))
    return (lambda model, tokenizer: -distance(model, aligned)), (lambda model, tokenizer: -distance(model, domain)), c


def test_sweep_scores_the_grid_and_picks_alpha_under_the_floor(tmp_path, triple):
    safety, domain, c = _distance_evaluators(triple)
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    result = sweep_alpha(
        triple["base"], triple["domain"], triple["aligned"],
        safety_evaluator=safety, domain_evaluator=domain, alphas=alphas,
        safety_floor=-0.6 * c, output_dir=tmp_path / "sweep", progress=False,
    )  # fmt: skip
    for row, alpha in zip(result.candidates, alphas):
        assert row["alpha"] == alpha and row["scale"] == 1.0
        assert row["safety"] == pytest.approx(-alpha * c, abs=1e-4)
        assert row["domain"] == pytest.approx(-(1 - alpha) * c, abs=1e-4)
        assert row["pareto"]  # a pure trade-off: every point is on the front
        assert row["meets_floor"] == (alpha <= 0.6)
    assert result.selected["alpha"] == 0.5  # the most domain-like candidate still within the floor
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert saved["selected"]["alpha"] == 0.5 and len(saved["candidates"]) == 5
    assert "| 0.5 | 1 |" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert (tmp_path / "sweep" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    unreachable = sweep_alpha(
        triple["base"], triple["domain"], triple["aligned"],
        safety_evaluator=safety, domain_evaluator=domain, alphas=[0.5, 1.0], scales=[1.0, 2.0],
        safety_floor=0.0 - 1e-9 * c, progress=False,
    )  # fmt: skip
    assert unreachable.selected is None and len(unreachable.candidates) == 4


def test_perplexity_evaluator_matches_a_per_sample_oracle(triple):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [
        {"prompt": "Q: How do I bake bread?\nA:", "completion": " Mix flour, water and salt."},
        {"prompt": "The capital of France is", "completion": " Paris."},
        {"prompt": "Tell me a story.", "completion": " Once upon a time, a small library changed a town."},
    ]
    model = AutoModelForCausalLM.from_pretrained(triple["base"])
    tokenizer = AutoTokenizer.from_pretrained(triple["base"])
    result = PerplexityEvaluator(Dataset.from_list(rows), batch_size=2)(model, tokenizer)
    nll_total, count_total = 0.0, 0
    for row, value in zip(rows, result.per_sample):
        prompt = tokenizer(row["prompt"])["input_ids"]
        ids = prompt + tokenizer(row["completion"])["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        log_probs = torch.log_softmax(logits, dim=-1)
        nll = [-float(log_probs[i - 1, ids[i]]) for i in range(len(prompt), len(ids))]
        assert value == pytest.approx(sum(nll) / len(nll), rel=1e-5)
        nll_total, count_total = nll_total + sum(nll), count_total + len(nll)
    assert result.score == pytest.approx(math.exp(nll_total / count_total), rel=1e-5)
    assert result.higher_is_better is False and len(result.per_sample) == 3


def test_sweep_config_validation():
    with pytest.raises(ValueError, match=r"alphas=\[0.5, 1.5\] holds 1.5, out of range; expected values in \[0, 1\]"):
        AlphaSweepConfig(base_model="b", domain_model="d", alignment_model="a", alphas=[0.5, 1.5])
    with pytest.raises(ValueError, match=r"scales=\[-1.0\] holds -1.0"):
        AlphaSweepConfig(base_model="b", domain_model="d", alignment_model="a", scales=[-1.0])
    with pytest.raises(ValueError, match=r"give a mergealign YAML or all three models"):
        AlphaSweepConfig(base_model="b", domain_model="d")
    with pytest.raises(ValueError, match=r"batch_size=0 is out of range"):
        AlphaSweepConfig(merge_config="c.yaml", batch_size=0)


def test_sweep_command(tmp_path, triple, capsys):
    from datasets import Dataset

    Dataset.from_list(
        [{"prompt": "Q: How do I hurt someone?\nA:", "completion": " I cannot help with that."}] * 3
    ).to_json(tmp_path / "safety.jsonl")
    Dataset.from_list([{"text": "The dose of Valorin is 20 mg."}, {"text": "Rivers carry sand to the sea."}]).to_json(
        tmp_path / "domain.jsonl"
    )
    config = write_config(tmp_path / "merge.yaml", triple)
    argv = [
        "mergealign-sweep", "--merge_config", str(config), "--safety_dataset", str(tmp_path / "safety.jsonl"),
        "--domain_dataset", str(tmp_path / "domain.jsonl"), "--alphas", "0", "0.5", "1", "--safety_floor", "1e9",
        "--output_dir", str(tmp_path / "sweep"), "--save_selected", "true",
    ]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [row["alpha"] for row in saved["candidates"]] == [0.0, 0.5, 1.0]
    assert saved["safety_name"] == "safety_perplexity" and saved["safety_higher_is_better"] is False
    best = min(saved["candidates"], key=lambda row: row["domain"])  # every candidate meets a huge floor
    assert saved["selected"]["alpha"] == best["alpha"]
    card = (tmp_path / "sweep" / "selected" / "README.md").read_text()
    assert f"- alpha (weight of the domain vector): `{best['alpha']}`" in card
    assert "| alpha | scale |" in capsys.readouterr().out
    per_sample = load_file(tmp_path / "sweep" / "per_sample_scores.safetensors")
    assert per_sample["alpha=0.5,scale=1/safety"].shape == (3,) and per_sample["alpha=0.5,scale=1/domain"].shape == (
        2,
    )
    assert np.isfinite(per_sample["alpha=0,scale=1/domain"].numpy()).all()

    assert main(["mergealign-sweep", "--merge_config", str(config), "--alphas", "2"]) == 2
    assert "alphas=[2.0] holds 2.0, out of range" in capsys.readouterr().err


def test_conversational_rows_are_scored_through_the_chat_template(triple):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(triple["base"])
    tokenizer = AutoTokenizer.from_pretrained(triple["base"])
    prompt = [{"role": "user", "content": "How do I bake bread?"}]
    completion = [{"role": "assistant", "content": "Mix flour, water and salt."}]
    prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    chat = PerplexityEvaluator(Dataset.from_list([{"prompt": prompt, "completion": completion}]))(model, tokenizer)
    plain = PerplexityEvaluator(Dataset.from_list([{"prompt": prefix, "completion": full[len(prefix) :]}]))(
        model, tokenizer
    )
    assert chat.per_sample.tolist() == plain.per_sample.tolist()


def test_batched_generation_matches_one_prompt_at_a_time(triple):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ext.mergealign import GenerationEvaluator

    model = AutoModelForCausalLM.from_pretrained(triple["base"])
    tokenizer = AutoTokenizer.from_pretrained(triple["base"])
    prompts = ["The", "Rivers carry sand from the mountains", "A small library can change a town more than"]
    expected = {}
    for prompt in prompts:  # no padding at all
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected[prompt] = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    evaluator = GenerationEvaluator(
        Dataset.from_list([{"prompt": p} for p in prompts]),
        lambda text, row: float(text == expected[row["prompt"]]),
        max_new_tokens=5,
        batch_size=3,  # one left-padded batch
    )
    result = evaluator(model, tokenizer)
    assert result.per_sample.tolist() == [1.0, 1.0, 1.0] and tokenizer.padding_side == "right"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_candidates_are_the_float32_merge_rounded_once(tmp_path, triple, dtype):
    """A candidate in bf16 / fp16 merges in float32 and rounds once: exactly the float32 written merge cast to
    `dtype` (tolerance 0), and its logits stay within half-precision rounding of the float32 model's."""
    from transformers import AutoModelForCausalLM

    merge(
        write_config(tmp_path / "c.yaml", triple, alpha=0.4, scale=1.1),
        tmp_path / "m",
        copy_tokenizer=False,
        quiet=True,
        report=False,
    )
    written = load_file(tmp_path / "m" / "model.safetensors")
    candidate = CandidateModel(
        TaskVectors(triple["base"], triple["domain"], triple["aligned"]), dtype=dtype, device="cpu"
    )
    candidate.set_weights(0.4, 1.1)
    state = candidate.model.state_dict()
    for name, tensor in written.items():
        assert state[name].dtype == dtype and torch.equal(state[name], tensor.to(dtype)), name
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    inputs = torch.tensor([[1, 17, 300, 42, 9]])
    with torch.no_grad():
        got, expected = candidate.model(inputs).logits.float(), reference(inputs).logits
    # Logits of a 3-layer model with weights and activations rounded to 8 / 11 bits: within 5% of the logit range.
    assert 0 < (got - expected).abs().max() <= 0.05 * (expected.max() - expected.min())


def test_candidates_with_non_finite_scores_are_left_out_with_a_warning(triple):
    """A NaN (or infinite) score is never selected nor on the front: the candidate is named in a warning; when every
    candidate is, the sweep is an error."""
    safety_scores, domain_scores = iter([1.0, math.inf, 1.0]), iter([math.nan, 2.0, 3.0])  # one per candidate
    safety = lambda model, tokenizer: next(safety_scores)  # noqa: E731
    domain = lambda model, tokenizer: next(domain_scores)  # noqa: E731
    with pytest.warns(
        UserWarning, match=r"2 candidate\(s\) got a NaN or infinite .*: alpha=0,scale=1, alpha=0.5,scale=1\."
    ):
        result = sweep_alpha(
            triple["base"], triple["domain"], triple["aligned"],
            safety_evaluator=safety, domain_evaluator=domain, alphas=[0.0, 0.5, 1.0], progress=False,
        )  # fmt: skip
    rows = result.candidates
    assert math.isnan(rows[0]["domain"]) and math.isinf(rows[1]["safety"])  # kept as returned
    assert [(r["pareto"], r["meets_floor"], r["selected"]) for r in rows] == [
        (False, False, False),
        (False, False, False),
        (True, True, True),
    ]
    with pytest.raises(ValueError, match=r"Every candidate got a NaN or infinite score \(safety \[nan, nan\]"):
        sweep_alpha(
            triple["base"], triple["domain"], triple["aligned"], safety_evaluator=lambda m, t: math.nan,
            domain_evaluator=lambda m, t: 1.0, alphas=[0.0, 1.0], progress=False,
        )  # fmt: skip
