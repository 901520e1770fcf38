"""The names that differ between transformers releases (`hf_ext._compat`), and the suite's deprecation guard."""

import dataclasses
import re
from pathlib import Path

import pytest
import tomllib
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.utils import ModelOutput

from hf_ext import _compat, versions
from hf_ext._compat import (
    CACHE_NAME,
    adopt_activation_checkpointing,
    cache_kwargs,
    enable_activation_checkpointing,
    model_output_cache,
    pop_cache,
)


new_names = pytest.mark.skipif(CACHE_NAME != "cache", reason="transformers < 5.24 has only the old names")


def test_cache_name_is_the_installed_model_outputs_field():
    from transformers.modeling_outputs import CausalLMOutputWithPast

    assert CACHE_NAME in {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}


def test_cache_goes_in_and_comes_out_under_the_installed_name(tiny_llama_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    ids = torch.tensor([[1, 5, 6, 7]])
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids[:, :3], use_cache=True, **cache_kwargs(cache))
    assert model_output_cache(out) is cache and cache.get_seq_length() == 3
    step = model(input_ids=ids[:, 3:], use_cache=True, **cache_kwargs(cache))
    full = model(input_ids=ids).logits[:, -1]
    torch.testing.assert_close(step.logits[:, -1], full, atol=1e-5, rtol=1e-5)


def test_pop_cache_takes_the_old_names_and_refuses_two_caches():
    first, second = DynamicCache(), DynamicCache()
    kwargs = {"past_key_values": first, "other": 1}
    assert pop_cache(kwargs) is first and kwargs == {"other": 1}
    assert pop_cache({"past_key_values": None}, second) is second
    with pytest.raises(ValueError, match="got both `cache` and `past_key_values`"):
        pop_cache({"past_key_values": first}, second)


def test_named_cache_field_renames_the_field_for_older_releases(monkeypatch):
    monkeypatch.setattr(_compat, "CACHE_NAME", "past_key_values")

    @dataclasses.dataclass
    @_compat.named_cache_field
    class Output(ModelOutput):
        logits: torch.Tensor | None = None
        cache: object = None
        extra: int | None = None

    assert [field.name for field in dataclasses.fields(Output)] == ["logits", "past_key_values", "extra"]
    assert "cache" not in Output.__dict__ and Output.__dict__["past_key_values"] is None


@new_names
def test_a_deprecated_argument_fails_the_suite(tiny_llama_path):
    """pyproject's filterwarnings turns the stack's deprecations into errors: the old cache name must raise here."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    with pytest.raises(FutureWarning, match="past_key_values"):
        model(input_ids=torch.tensor([[1, 2]]), past_key_values=DynamicCache(config=model.config), use_cache=True)


def test_trl_config_keeps_the_checkpointing_value_without_a_deprecation(tmp_path):
    from hf_ext.aot import AOTConfig

    for value in (True, False):
        args = AOTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], gradient_checkpointing=value)
        assert args.gradient_checkpointing is value
        assert getattr(args, "activation_checkpointing", value) is value
    default = AOTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    assert default.gradient_checkpointing is True  # TRL's default, kept


def test_adopt_activation_checkpointing_moves_only_an_unset_new_field():
    @dataclasses.dataclass
    class Args:
        gradient_checkpointing: bool | None = True
        gradient_checkpointing_kwargs: dict | None = None
        activation_checkpointing: bool | None = None
        activation_checkpointing_kwargs: dict | None = None

    args = Args()
    adopt_activation_checkpointing(args)
    assert (args.activation_checkpointing, args.gradient_checkpointing) == (True, None)
    explicit = Args(gradient_checkpointing=True, activation_checkpointing=False)
    adopt_activation_checkpointing(explicit)
    assert (explicit.activation_checkpointing, explicit.gradient_checkpointing) == (False, True)


def test_enable_activation_checkpointing_recomputes_the_same_gradients(tiny_llama_path):
    torch.manual_seed(0)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])

    def grads(checkpointing):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
        model.train()
        if checkpointing:
            enable_activation_checkpointing(model, {"use_reentrant": False})
        model(input_ids=ids, labels=ids).loss.backward()
        return model, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    plain_model, plain = grads(False)
    checkpointed_model, checkpointed = grads(True)
    flag = getattr(checkpointed_model, "is_activation_checkpointing", None)
    assert flag if flag is not None else checkpointed_model.is_gradient_checkpointing
    torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-5)


def test_the_previous_pinned_set_is_still_supported_and_older_than_the_pinned_one():
    """`make test-previous` runs the suite on constraints-previous.txt, the set before the last move of the pins:
    pyproject's lower bounds admit it, and its transformers is older than the pinned one."""
    root = Path(__file__).resolve().parents[1]
    previous = versions.tested_versions(root / "constraints-previous.txt")
    current = versions.tested_versions(root / "constraints.txt")
    for line in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert requirement.specifier.contains(Version(previous[name]), prereleases=True), (name, previous[name])
    assert Version(previous["transformers"]) < Version(current["transformers"])
