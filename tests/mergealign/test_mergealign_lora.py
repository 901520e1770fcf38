"""PEFT LoRA adapters as domain / alignment inputs: tau = scaled B @ A, checked against PEFT's merge_and_unload."""

import numpy as np
import pytest
import torch
from mergealign_files import write_config
from safetensors.torch import load_file

from hf_ext.mergealign import lora_task_vector, merge
from hf_ext.mergealign.lora import LoraAdapter


def _train_like(model, seed):
    """Give every LoRA factor non-zero values (a fresh adapter has B = 0, so tau would be 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def _adapter(base_path, folder, config, seed=0):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = _train_like(get_peft_model(AutoModelForCausalLM.from_pretrained(base_path), config), seed)
    model.save_pretrained(folder)
    merged = model.merge_and_unload()
    return {name: t.detach().clone() for name, t in merged.state_dict().items()}


def _lora_configs():
    from peft import LoraConfig

    return {
        "plain": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
        "patterns_rslora": LoraConfig(
            r=4,
            lora_alpha=16,
            target_modules=["q_proj", "o_proj", "up_proj"],
            rank_pattern={"o_proj": 2},
            alpha_pattern={"up_proj": 3},
            use_rslora=True,
        ),
        "embedding_and_modules_to_save": LoraConfig(
            r=2, lora_alpha=4, target_modules=["embed_tokens", "k_proj"], modules_to_save=["lm_head"]
        ),
    }


@pytest.mark.parametrize("kind", ["plain", "patterns_rslora", "embedding_and_modules_to_save"])
def test_task_vector_equals_peft_merge_and_unload(tmp_path, triple, kind):
    merged = _adapter(triple["base"], tmp_path / "adapter", _lora_configs()[kind], seed=3)
    base = load_file(triple["base"] / "model.safetensors")
    vectors = lora_task_vector(tmp_path / "adapter", base=triple["base"])
    for name, tensor in base.items():
        expected = (merged[name].double() - tensor.double()).numpy()
        if name not in vectors:
            assert np.abs(expected).max() == 0, f"{name} changed but the adapter has no vector for it"
            continue
        np.testing.assert_allclose(vectors[name].double().numpy(), expected, atol=1e-6, err_msg=name)
    assert any(np.abs(v.numpy()).max() > 1e-3 for v in vectors.values())


def test_fan_in_fan_out_adapter_on_gpt2(tmp_path, tiny_gpt2_path):
    from peft import LoraConfig

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
    merged = _adapter(tiny_gpt2_path, tmp_path / "adapter", config, seed=4)
    base = load_file(tiny_gpt2_path / "model.safetensors")
    vectors = lora_task_vector(tmp_path / "adapter", base=tiny_gpt2_path)
    assert vectors  # the Conv1D weights, stored (in, out)
    for name, vector in vectors.items():
        checkpoint_name = name if name in base else name.removeprefix("transformer.")
        expected = merged[name].double() - base[checkpoint_name].double()
        np.testing.assert_allclose(vector.double().numpy(), expected.numpy(), atol=1e-6, err_msg=name)


def test_merge_with_a_lora_input_equals_merge_with_the_merged_model(tmp_path, triple, monkeypatch):
    """`model: path/to/adapter` (and mergekit's own `base+adapter`) merge like the adapter merged into the base, and
    no merged model is ever written."""
    from mergekit.common import ModelReference
    from transformers import AutoModelForCausalLM

    merged_state = _adapter(triple["base"], tmp_path / "adapter", _lora_configs()["embedding_and_modules_to_save"])
    full = AutoModelForCausalLM.from_pretrained(triple["base"])
    full.load_state_dict(merged_state)
    full.save_pretrained(tmp_path / "adapter-merged")
    reference = {"base": triple["base"], "domain": triple["domain"], "aligned": tmp_path / "adapter-merged"}
    merge(
        write_config(tmp_path / "ref.yaml", reference, alpha=0.4, scale=1.2),
        tmp_path / "ref",
        copy_tokenizer=False,
        quiet=True,
    )

    def no_merged_copies(self, *args, **kwargs):
        if self.lora is not None:
            raise AssertionError(f"mergekit was asked to write a merged copy of {self}")
        return self

    monkeypatch.setattr(ModelReference, "merged", no_merged_copies)
    expected = load_file(tmp_path / "ref" / "model.safetensors")
    for spelling in (str(tmp_path / "adapter"), f"{triple['base']}+{tmp_path / 'adapter'}"):
        out = tmp_path / f"out-{len(spelling)}"
        inputs = {"base": triple["base"], "domain": triple["domain"], "aligned": spelling}
        report = merge(
            write_config(tmp_path / "c.yaml", inputs, alpha=0.4, scale=1.2), out, copy_tokenizer=False, quiet=True
        )
        actual = load_file(out / "model.safetensors")
        assert actual.keys() == expected.keys()
        for name in expected:
            np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(), atol=1e-6, err_msg=name)
        assert report.summary["num_tensors"] == len(expected)
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and "adapter" in p.name) == [
            "adapter",
            "adapter-merged",
        ]
        assert '"lora_inputs": [\n    "alignment"\n  ]' in (out / "README.md").read_text()


def test_unsupported_adapters_are_rejected_up_front(tmp_path, triple):
    from peft import LoraConfig

    _adapter(triple["base"], tmp_path / "dora", LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(ValueError, match=r"not a plain LoRA adapter \(use_dora=True\)"):
        LoraAdapter(tmp_path / "dora")
    inputs = {"base": triple["base"], "domain": tmp_path / "dora", "aligned": triple["aligned"]}
    with pytest.raises(ValueError, match="use_dora=True"):
        merge(write_config(tmp_path / "c.yaml", inputs), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_adapter_for_another_base_is_rejected(tmp_path, triple):
    from peft import LoraConfig

    from hf_ext.testing import build_tiny_causal_lm

    build_tiny_causal_lm("llama", num_layers=3, intermediate_size=96).save_pretrained(tmp_path / "narrow")
    _adapter(tmp_path / "narrow", tmp_path / "other", LoraConfig(r=2, target_modules=["gate_proj"]))
    inputs = {"base": triple["base"], "domain": tmp_path / "other", "aligned": triple["aligned"]}
    with pytest.raises(
        ValueError,
        match=r"The domain adapter .*other does not fit the base model: model.layers.0.mlp.gate_proj.weight: "
        r"update \(96, 64\) vs \(128, 64\) in the base",
    ):
        merge(write_config(tmp_path / "c.yaml", inputs), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sweep_candidates_from_an_adapter_equal_the_merge(tmp_path, triple):
    from hf_ext.mergealign.sweep import CandidateModel
    from hf_ext.mergealign.weights import TaskVectors

    _adapter(triple["base"], tmp_path / "adapter", _lora_configs()["patterns_rslora"], seed=5)
    inputs = {"base": triple["base"], "domain": tmp_path / "adapter", "aligned": triple["aligned"]}
    merge(
        write_config(tmp_path / "c.yaml", inputs, alpha=0.7, scale=1.3),
        tmp_path / "out",
        copy_tokenizer=False,
        quiet=True,
        report=False,
    )
    written = load_file(tmp_path / "out" / "model.safetensors")
    candidate = CandidateModel(TaskVectors(triple["base"], tmp_path / "adapter", triple["aligned"]), device="cpu")
    candidate.set_weights(0.7, 1.3)
    state = candidate.model.state_dict()
    for name, tensor in written.items():
        np.testing.assert_allclose(state[name].numpy(), tensor.numpy(), atol=1e-6, err_msg=name)


def test_any_mergekit_method_reads_lora_inputs_without_merged_copies(tmp_path, triple, monkeypatch):
    """`serve_adapters` (used for the real stage's baselines): mergekit's task_arithmetic over two `base+adapter`
    inputs equals base + both adapters' updates as PEFT merges them, and mergekit never writes a merged copy."""
    from mergekit.common import ModelReference
    from transformers import AutoModelForCausalLM

    from examples.mergealign.experiment import mergekit_merge

    configs = _lora_configs()
    merged = {
        "one": _adapter(triple["base"], tmp_path / "one", configs["plain"], seed=1),
        "two": _adapter(triple["base"], tmp_path / "two", configs["patterns_rslora"], seed=2),
    }
    base = AutoModelForCausalLM.from_pretrained(triple["base"]).state_dict()

    def no_merged_copies(self, *args, **kwargs):
        if self.lora is not None:
            raise AssertionError(f"mergekit was asked to write a merged copy of {self}")
        return self

    monkeypatch.setattr(ModelReference, "merged", no_merged_copies)
    config = {
        "merge_method": "task_arithmetic",
        "base_model": str(triple["base"]),
        "models": [{"model": f"{triple['base']}+{tmp_path / name}", "parameters": {"weight": 1.0}} for name in merged],
        "dtype": "float32",
    }
    out = mergekit_merge(config, tmp_path / "out")
    actual = load_file(out / "model.safetensors")
    changed = 0
    for name, value in actual.items():
        expected = base[name] + (merged["one"][name] - base[name]) + (merged["two"][name] - base[name])
        np.testing.assert_allclose(value.numpy(), expected.numpy(), atol=1e-6, err_msg=name)
        changed += not torch.equal(value, base[name])
    assert changed >= 2 * len([n for n in actual if "q_proj" in n])


def _resized_model(folder):
    from hf_ext.testing import build_tiny_causal_lm

    model = build_tiny_causal_lm("llama", num_layers=3)
    model.resize_token_embeddings(model.config.vocab_size + 8, mean_resizing=False)
    model.save_pretrained(folder)
    return folder


def _resized_adapter(tmp_path):
    from peft import LoraConfig

    _adapter(
        _resized_model(tmp_path / "resized"), tmp_path / "input", LoraConfig(r=2, modules_to_save=["embed_tokens"])
    )


def _nan_adapter(tmp_path, triple):
    from peft import LoraConfig
    from safetensors.torch import save_file

    _adapter(triple["base"], tmp_path / "input", LoraConfig(r=2, target_modules=["q_proj"]))
    weights = load_file(tmp_path / "input" / "adapter_model.safetensors")
    key = sorted(weights)[0]
    weights[key][0, 0] = float("nan")
    save_file(weights, tmp_path / "input" / "adapter_model.safetensors")


VOCABULARY = r"The vocabularies differ \(1032 rows in (model.embed_tokens|lm_head).weight vs 1024 in the base\)"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda tmp_path, triple: _resized_model(tmp_path / "input"),
            rf"The domain model .*input does not match the base model: 2 tensor\(s\) differ in shape \(lm_head.weight: \(1032, 64\) vs \(1024, 64\) in the base.*{VOCABULARY}",
        ),
        (
            lambda tmp_path, triple: _resized_adapter(tmp_path),
            rf"The domain adapter .*input does not fit the base model: model.embed_tokens.weight: saved \(1032, 64\) vs \(1024, 64\) in the base.*{VOCABULARY}",
        ),
        (
            _nan_adapter,
            r"The adapter .*input holds NaN or infinite values in 1 tensor\(s\) \(base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\)",
        ),
    ],
    ids=["resized-vocabulary-model", "resized-vocabulary-adapter", "nan-adapter"],
)
def test_inputs_that_do_not_fit_the_base_are_named_before_merging(tmp_path, triple, make, message):
    """Issue 18, item 4: the tensor and both shapes (or the non-finite tensor) are named, and nothing is written;
    `lora_task_vector` against the same base says the same."""
    make(tmp_path, triple)
    inputs = {"base": triple["base"], "domain": tmp_path / "input", "aligned": triple["aligned"]}
    with pytest.raises(ValueError, match=message):
        merge(write_config(tmp_path / "c.yaml", inputs), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    if (tmp_path / "input" / "adapter_config.json").exists():
        with pytest.raises(ValueError, match=message.replace("domain adapter", "input adapter")):
            lora_task_vector(tmp_path / "input", triple["base"])
