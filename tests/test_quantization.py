from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model

from hf_ext.quantization import bnb_config, default_compute_dtype, load_quantized, will_be_sharded


def test_cpu_defaults():
    assert default_compute_dtype("cpu") == torch.float32
    config = bnb_config(4, device="cpu")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype == torch.float32
    assert bnb_config(8).load_in_8bit


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"bits": 3}, "bits=3"), ({"bits": 4, "quant_type": "int4"}, "quant_type='int4'")]
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bnb_config(**kwargs)


@pytest.mark.parametrize(("bits", "layer_type"), [(4, bnb.nn.Linear4bit), (8, bnb.nn.Linear8bitLt)])
def test_qlora_step_trains_adapters_and_keeps_base_quantized(tiny_llama_path, bits, layer_type):
    model = load_quantized(tiny_llama_path, bits=bits, prepare_for_training=True)
    # The default placement: this process's GPU when there is one, else the CPU.
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    )
    base = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(base, layer_type)
    base_weight = base.weight.data.clone()
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(10, 1000, (2, 16), generator=torch.Generator().manual_seed(0)).to(model.device)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()

    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert sorted(changed) == sorted(trainable)
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, layer_type)
    assert torch.equal(base.weight.data, base_weight)


def _adapter_grads(model, ids):
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _packed_layers(model):
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    return sum(bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False)) for m in layers)


def test_adapter_gradients_survive_an_eval_forward(tiny_llama_path):
    # bitsandbytes packs 4-bit CPU weights for inference on an eval forward (on AVX512-BF16 CPUs); its packed kernel
    # has no backward. After evaluation, training must compute the same gradients as before it.
    model = load_quantized(tiny_llama_path, bits=4, prepare_for_training=True)
    model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    )
    ids = torch.randint(10, 1000, (2, 16), generator=torch.Generator().manual_seed(0)).to(model.device)
    before = _adapter_grads(model, ids)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    packed_after_eval = _packed_layers(model)
    after = _adapter_grads(model, ids)
    assert before.keys() == after.keys() and all(before[n].abs().sum() > 0 for n in before)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-7, msg=name)
    assert packed_after_eval == 0


class _RecordingLoader:
    """A `model_class` for `load_quantized` that records what `from_pretrained` was given."""

    calls: list[dict] = []

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        from transformers import AutoModelForCausalLM

        cls.calls.append(kwargs)
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def test_quant_storage_is_passed_and_8bit_rejects_it():
    assert bnb_config(4, device="cpu").bnb_4bit_quant_storage == torch.uint8
    assert bnb_config(4, device="cpu", quant_storage=torch.bfloat16).bnb_4bit_quant_storage == torch.bfloat16
    with pytest.raises(ValueError, match="quant_storage=torch.bfloat16 applies to 4-bit weights only"):
        bnb_config(8, quant_storage=torch.bfloat16)


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_sharded_loading_sets_no_device_map_and_stores_4bit_in_the_compute_dtype(
    tiny_llama_path, monkeypatch, compute_dtype
):
    """FSDP-QLoRA / ZeRO-3-QLoRA: no device map (both reject one) and flat-shardable 4-bit storage; same model."""
    _RecordingLoader.calls.clear()
    placed = load_quantized(tiny_llama_path, compute_dtype=compute_dtype, model_class=_RecordingLoader)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    assert will_be_sharded()
    sharded = load_quantized(tiny_llama_path, compute_dtype=compute_dtype, model_class=_RecordingLoader)
    assert "device_map" in _RecordingLoader.calls[0] and "device_map" not in _RecordingLoader.calls[1]

    layer, reference = sharded.model.layers[0].self_attn.q_proj, placed.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and reference.weight.dtype == torch.uint8
    assert layer.weight.dtype == compute_dtype
    # The same quantized bytes, reinterpreted: the storage dtype changes nothing the model computes.
    assert torch.equal(layer.weight.data.view(torch.uint8).flatten(), reference.weight.data.flatten())
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0)).to(placed.device)
    with torch.no_grad():
        assert torch.equal(sharded(ids.to(sharded.device)).logits.cpu(), placed(ids).logits.cpu())
    with pytest.raises(ValueError, match="device_map='auto' cannot be used with sharded=True"):
        load_quantized(tiny_llama_path, device_map="auto")


@pytest.mark.parametrize("bits", [4, 8])
def test_a_checkpoint_without_a_causal_lm_head_is_refused(tiny_bert_path, bits):
    """An encoder loaded as a causal LM would get a head initialised at random and generate noise (issue 18)."""
    with pytest.raises(
        ValueError,
        match=r"has no BertLMHeadModel head: 6 weight\(s\) of it are not in the checkpoint and would be newly "
        r"initialised at random \(cls.predictions.bias, .*\). The checkpoint was saved as \['BertModel'\]",
    ):
        load_quantized(tiny_bert_path, bits=bits)


def test_loading_info_is_returned_when_asked(tiny_llama_path):
    model, info = load_quantized(tiny_llama_path, bits=4, output_loading_info=True)
    assert isinstance(model.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize("name", ["./no-such-model", "../no-such-model", "~/no-such-model-29", "models/no-such"])
def test_a_missing_local_path_is_no_such_local_folder_not_a_repo_id_error(name, tmp_path, monkeypatch):
    """Issue 29: `load_quantized("./no-such-model")` said "Repo id must use alphanumeric chars"; a name that can only
    be a local path (./ ../ / ~, or `models/...` with a `models` folder here) is named as a missing local path."""
    (tmp_path / "work" / "models").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was looked up before the path was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    with pytest.raises(FileNotFoundError) as error:
        load_quantized(name, bits=4)
    message = str(error.value)
    where = Path(name.replace("~", str(tmp_path / "home"))).expanduser()
    where = where if where.is_absolute() else (tmp_path / "work" / where)
    assert message.startswith(f"model_name_or_path={name!r}: no such file or folder {where.resolve()}"), message
    assert "tried it as a local path" in message and "Repo id must" not in message
