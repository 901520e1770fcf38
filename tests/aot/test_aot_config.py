"""`AOTConfig`: defaults, validation at construction, and parsing by TrlParser like `trl dpo`."""

import pytest
import torch
from trl import DPOConfig, TrlParser

from hf_ext.aot import AOTConfig


def test_defaults(tmp_path):
    config = AOTConfig(str(tmp_path))
    assert isinstance(config, DPOConfig)
    assert config.beta == 0.01 and config.aot_variant == "paired" and config.aot_cost == "logistic"
    assert config.aot_margin == 0.0 and config.aot_soft_sort_temperature is None and config.aot_global_sort is True
    assert config.loss_type == ["aot"]
    assert AOTConfig(str(tmp_path), aot_variant="unpaired").loss_type == ["aot_unpaired"]
    # DPOConfig would ask for bf16 here and fail on a CPU-only machine; AOTConfig follows the hardware.
    assert config.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert AOTConfig(str(tmp_path), bf16=False).bf16 is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"aot_variant": "pairwise"},
            r"aot_variant='pairwise' is not supported; expected one of \['paired', 'unpaired'\]",
        ),
        ({"aot_cost": "cubic"}, r"aot_cost='cubic' is not supported; expected one of \['logistic', 'hinge'"),
        ({"beta": 0.0}, r"beta=0.0 is out of range; expected a number > 0 \(AOT\'s default: 0.01\)"),
        ({"beta": -0.5}, r"beta=-0.5 is out of range"),
        ({"beta": float("nan")}, r"beta=nan is out of range"),
        ({"aot_margin": float("inf")}, r"aot_margin=inf is out of range"),
        (
            {"aot_soft_sort_temperature": 0.0},
            r"aot_soft_sort_temperature=0.0 is out of range; expected a number > 0 or None \(None: hard sort\)",
        ),
        ({"label_smoothing": 0.7}, r"label_smoothing=0.7 is out of range; expected a number in \[0, 0.5\]"),
        ({"label_smoothing": 0.1, "aot_cost": "hinge"}, r"label_smoothing=0.1 only applies to aot_cost='logistic'"),
        ({"loss_type": "sigmoid"}, r"loss_type='sigmoid' does not match aot_variant='paired'"),
        ({"loss_type": ["aot"], "aot_variant": "unpaired"}, r"does not match aot_variant='unpaired'"),
        ({"loss_weights": [1.0]}, r"loss_weights=\[1.0\] is not supported by AOT"),
        ({"ld_alpha": 0.5}, r"ld_alpha=0.5 is not supported by AOT"),
        ({"use_weighting": True}, r"use_weighting=True is not supported by AOT"),
        ({"f_divergence_type": "js_divergence"}, r"f_divergence_type='js_divergence' is not supported by AOT"),
    ],
)
def test_invalid_values_raise_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AOTConfig(str(tmp_path), **kwargs)


def test_matching_loss_type_is_accepted(tmp_path):
    assert AOTConfig(str(tmp_path), loss_type="aot_unpaired", aot_variant="unpaired").loss_type == ["aot_unpaired"]


def test_trl_parser_reads_yaml_and_command_line(tmp_path):
    recipe = tmp_path / "aot.yaml"
    recipe.write_text("output_dir: out\naot_variant: unpaired\naot_cost: hinge\nbeta: 0.2\naot_margin: 0.5\n")
    parser = TrlParser((AOTConfig,))
    (config,) = parser.parse_args_and_config(
        ["--config", str(recipe), "--aot_margin", "1.5", "--aot_global_sort", "false"]
    )
    assert (config.aot_variant, config.aot_cost, config.beta, config.aot_margin) == ("unpaired", "hinge", 0.2, 1.5)
    assert config.aot_global_sort is False and config.loss_type == ["aot_unpaired"]
    with pytest.raises(SystemExit):  # argparse rejects a value outside the declared choices
        parser.parse_args_and_config(["--output_dir", "out", "--aot_cost", "cubic"])
