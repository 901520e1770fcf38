"""The mergekit method and `merge` / `hf-ext merge`: oracles against mergekit's own methods, errors, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mergealign_files import save_triple, write_config
from safetensors.torch import load_file

from hf_ext.cli import main
from hf_ext.mergealign import merge


ROOT = Path(__file__).resolve().parents[2]


def _tensors(folder):
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _mergekit(tmp_path, name, config):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out = tmp_path / name
    run_merge(
        MergeConfiguration.model_validate(config), str(out), options=MergeOptions(copy_tokenizer=False, quiet=True)
    )
    return _tensors(out)


def _assert_close(actual, expected, atol=1e-6):
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(
            actual[name].double().numpy(), expected[name].double().numpy(), atol=atol, rtol=0, err_msg=name
        )


@pytest.mark.parametrize(("alpha", "scale"), [(0.5, 1.0), (0.3, 1.5), (0.8, 0.6)])
def test_equals_mergekit_task_arithmetic(tmp_path, triple, alpha, scale):
    merge(
        write_config(tmp_path / "c.yaml", triple, alpha=alpha, scale=scale),
        tmp_path / "ours",
        copy_tokenizer=False,
        quiet=True,
    )
    expected = _mergekit(
        tmp_path,
        "task_arithmetic",
        {
            "merge_method": "task_arithmetic",
            "base_model": str(triple["base"]),
            "models": [
                {"model": str(triple["domain"]), "parameters": {"weight": scale * alpha}},
                {"model": str(triple["aligned"]), "parameters": {"weight": scale * (1 - alpha)}},
            ],
            "parameters": {"normalize": False},
        },
    )
    _assert_close(_tensors(tmp_path / "ours"), expected)


def test_scale_one_equals_mergekit_linear(tmp_path, triple):
    merge(write_config(tmp_path / "c.yaml", triple, alpha=0.35), tmp_path / "ours", copy_tokenizer=False, quiet=True)
    expected = _mergekit(
        tmp_path,
        "linear",
        {
            "merge_method": "linear",
            "models": [
                {"model": str(triple["domain"]), "parameters": {"weight": 0.35}},
                {"model": str(triple["aligned"]), "parameters": {"weight": 0.65}},
            ],
            "parameters": {"normalize": False},
        },
    )
    _assert_close(_tensors(tmp_path / "ours"), expected)


def test_per_layer_alpha_with_mergekit_gradients(tmp_path, triple):
    """alpha: [0.9, 0.5] over 3 layers gives 0.9, 0.7, 0.5; embeddings, lm_head and the final norm take 0.9."""
    merge(
        write_config(tmp_path / "c.yaml", triple, alpha=[0.9, 0.5], scale=1.2),
        tmp_path / "ours",
        copy_tokenizer=False,
        quiet=True,
    )
    merged = _tensors(tmp_path / "ours")
    base, domain, aligned = (load_file(triple[k] / "model.safetensors") for k in ("base", "domain", "aligned"))
    layer_alpha = {"0": 0.9, "1": 0.7, "2": 0.5}
    assert len({n.split(".")[2] for n in base if n.startswith("model.layers.")}) == 3
    for name, b in base.items():
        alpha = layer_alpha[name.split(".")[2]] if name.startswith("model.layers.") else 0.9
        b64, d64, a64 = b.double(), domain[name].double(), aligned[name].double()
        expected = b64 + 1.2 * (alpha * (d64 - b64) + (1 - alpha) * (a64 - b64))
        np.testing.assert_allclose(merged[name].double().numpy(), expected.numpy(), atol=1e-6, err_msg=name)


def test_bfloat16_inputs_accumulate_in_float32(tmp_path_factory, tmp_path):
    triple = save_triple(tmp_path_factory.mktemp("bf16"), dtype=torch.bfloat16)
    merge(
        write_config(tmp_path / "c.yaml", triple, alpha=0.4, scale=1.3, dtype="bfloat16"),
        tmp_path / "ours",
        copy_tokenizer=False,
        quiet=True,
    )
    merged = _tensors(tmp_path / "ours")
    base, domain, aligned = (load_file(triple[k] / "model.safetensors") for k in ("base", "domain", "aligned"))
    for name, b in base.items():
        assert merged[name].dtype == torch.bfloat16
        exact = b.double() + 1.3 * (
            0.4 * (domain[name].double() - b.double()) + 0.6 * (aligned[name].double() - b.double())
        )
        # Correctly rounded from float32: within half a bfloat16 ulp (8 significant bits), plus a float32 ulp for
        # the double rounding float64 -> float32 -> bfloat16.
        exponent = torch.frexp(exact).exponent
        bound = torch.ldexp(torch.full_like(exact, 0.5), exponent - 8) + torch.ldexp(
            torch.ones_like(exact), exponent - 24
        )
        assert bool(((merged[name].double() - exact).abs() <= bound).all()), name


@pytest.mark.slow
def test_cli_and_python_write_identical_files(tmp_path, triple):
    config = write_config(tmp_path / "c.yaml", triple, alpha=0.3, scale=1.1)
    merge(config, tmp_path / "python", copy_tokenizer=True, quiet=True)
    # The same settings as this process: the report's float32 dot products depend on the number of threads (the
    # merged weights do not).
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_ext.cli",
            "merge",
            str(config),
            str(tmp_path / "cli"),
            "--copy-tokenizer",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    python_files = sorted(p.name for p in (tmp_path / "python").iterdir())
    assert python_files == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert {
        "model.safetensors",
        "README.md",
        "mergealign_similarity.json",
        "mergealign_similarity.png",
        "tokenizer.json",
    } <= set(python_files)
    for name in python_files:
        assert (tmp_path / "python" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name


def test_cli_passes_mergekit_options_through(tmp_path, triple):
    config = write_config(tmp_path / "c.yaml", triple)
    argv = ["merge", str(config), str(tmp_path / "out"), "--out-shard-size", "50K", "--no-copy-tokenizer"]
    assert main([*argv, "--no-write-model-card", "--no-report", "--quiet"]) == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) > 1
    assert "README.md" not in files and "tokenizer.json" not in files and "mergealign_similarity.json" not in files
    _assert_close(_tensors(tmp_path / "out"), _tensors_of_python_merge(tmp_path, config))


def _tensors_of_python_merge(tmp_path, config):
    merge(config, tmp_path / "reference", copy_tokenizer=False, quiet=True, report=False)
    return _tensors(tmp_path / "reference")


def _config(triple, **changes):
    config = {
        "merge_method": "mergealign",
        "base_model": str(triple["base"]),
        "models": [
            {"model": str(triple["domain"]), "parameters": {"role": "domain"}},
            {"model": str(triple["aligned"]), "parameters": {"role": "alignment"}},
        ],
        "parameters": {"alpha": 0.5},
    }
    config.update(changes)
    return config


def _with_roles(triple, first, second):
    return _config(
        triple,
        models=[
            {"model": str(triple["domain"]), "parameters": {"role": first} if first else {}},
            {"model": str(triple["aligned"]), "parameters": {"role": second}},
        ],
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: _with_roles(t, "domain", "domain"), r"exactly one model with role 'domain'; found 2"),
        (lambda t: _with_roles(t, None, "alignment"), r"has no role; give it `parameters: \{role: domain\}`"),
        (lambda t: _with_roles(t, "domian", "alignment"), r"role='domian'; expected 'domain' or 'alignment'"),
        (lambda t: {k: v for k, v in _config(t).items() if k != "base_model"}, r"base_model is missing"),
        (
            lambda t: _config(t, parameters={"alpha": 1.5}),
            r"alpha=1.5 is not valid for mergealign: expected a number \[0, 1\]",
        ),
        (lambda t: _config(t, parameters={"alpha": [0.2, -0.1]}), r"alpha=\[0.2, -0.1\] is not valid"),
        (
            lambda t: _config(t, parameters={"scale": -1}),
            r"scale=-1 is not valid for mergealign: expected a number >= 0",
        ),
        (lambda t: _config(t, parameters={"weight": 0.5}), r"Unknown parameter 'weight' for mergealign"),
        (lambda t: _config(t, merge_method="linear"), r"merge_method='linear'"),
    ],
)
def test_bad_configurations_fail_before_any_tensor_is_written(tmp_path, triple, make, message):
    with pytest.raises(ValueError, match=message):
        merge(make(triple), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mismatched_shapes_fail_before_any_tensor_is_written(tmp_path, triple):
    from hf_ext.testing import build_tiny_causal_lm

    wider = tmp_path / "wider"
    build_tiny_causal_lm("llama", num_layers=3, intermediate_size=96).save_pretrained(wider)
    config = _config(triple)
    config["models"][1]["model"] = str(wider)
    with pytest.raises(
        ValueError,
        match=r"alignment model .*wider does not match the base model: 9 tensor\(s\) differ in shape "
        r"\(model.layers.0.mlp.down_proj.weight: \(64, 96\) vs \(64, 128\) in the base;",
    ):
        merge(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_bad_configuration_in_one_line(tmp_path, triple, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(_with_roles(triple, "alignment", "alignment")))
    assert main(["merge", str(config), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "hf-ext merge: error: mergealign needs exactly one model with role 'domain'; found 0." in err
    assert not (tmp_path / "out").exists()
    assert main(["merge", str(config)]) == 2  # click's usage error, from mergekit's own option set
    assert "Missing argument 'OUT_PATH'" in capsys.readouterr().err


def test_plain_mergekit_runs_the_method_after_import(tmp_path, triple):
    """After `import hf_ext.mergealign`, mergekit's own `run_merge` knows `merge_method: mergealign`."""
    tensors = _mergekit(tmp_path, "plain", _config(triple, parameters={"alpha": 0.25, "scale": 1.4}))
    merge(
        _config(triple, parameters={"alpha": 0.25, "scale": 1.4}),
        tmp_path / "ours",
        copy_tokenizer=False,
        quiet=True,
        report=False,
    )
    ours = _tensors(tmp_path / "ours")
    assert all(torch.equal(tensors[name], ours[name]) for name in ours)


def test_duplicate_roles_are_caught_by_the_kernel_too():
    from mergekit.merge_methods import merge_tensors

    tensors = [torch.zeros(2, 2), torch.ones(2, 2), torch.ones(2, 2)]
    with pytest.raises(ValueError, match=r"exactly one model with role 'domain' and one with role 'alignment'"):
        merge_tensors(tensors, "mergealign", base_index=0, parameters={"role": ["alignment", "alignment"]}, name="w")
    merged = merge_tensors(
        tensors, "mergealign", base_index=0, parameters={"role": ["domain", "alignment"], "alpha": 0.2, "scale": 3.0}
    )
    torch.testing.assert_close(merged, torch.full((2, 2), 3.0))


_PROBE = """
import sys, json
{first}
from mergekit.merge_methods import registry
print(json.dumps({{"registered": "mergealign" in {{m.spec.name for m in registry.registered_methods()}},
                  "mergekit_loaded_by_import": {loaded}}}))
"""


@pytest.mark.parametrize("mergekit_first", [False, True])
def test_import_registers_with_mergekit_in_either_order(mergekit_first):
    if mergekit_first:
        first = "import mergekit.merge_methods\nimport hf_ext.mergealign\nloaded = True"
    else:
        first = "import hf_ext.mergealign\nloaded = 'mergekit' in sys.modules"
    code = _PROBE.format(first=first, loaded="loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["registered"]
    if not mergekit_first:
        assert report["mergekit_loaded_by_import"] is False  # importing hf_ext.mergealign stays cheap


def test_registration_is_idempotent_and_refuses_a_foreign_method():
    import importlib

    from mergekit.merge_methods import BatchedMergeMethod, MergeMethodSpec, registry

    import hf_ext.mergealign.method as method

    importlib.reload(method)
    method.register()
    assert registry.get("mergealign") is method.mergealign_merge
    foreign = registry._METHODS.pop("mergealign")
    try:
        registry.register(BatchedMergeMethod(MergeMethodSpec(name="mergealign"), lambda batch: batch.tensors[0]))
        with pytest.raises(ValueError, match="already registered"):
            method.register()
    finally:
        registry._METHODS["mergealign"] = foreign


def test_fixture_ids_resolve_at_the_edge_not_in_the_merge_method(controlled):
    from hf_ext.mergealign import validate_config
    from hf_ext.testing import resolve_fixture_ids

    recipe = yaml.safe_load((ROOT / "processors" / "mergealign.yaml").read_text())
    plan = validate_config(resolve_fixture_ids(recipe))
    assert str(plan.config.base_model) == str(controlled.base)
    assert plan.domain_model == str(controlled.domain)
    assert plan.references == {"domain": str(controlled.domain), "alignment": str(controlled.aligned)}
    # The library itself takes folders and Hub ids only: a fixture id reaches mergekit as written (a Hub-style id).
    raw = validate_config(recipe)
    assert str(raw.config.base_model) == "hf-ext-testing/mergealign-base"


def test_other_merge_methods_run_as_mergekit_yaml_runs_them(tmp_path, triple):
    linear = {
        "merge_method": "linear",
        "models": [
            {"model": str(triple["domain"]), "parameters": {"weight": 0.3}},
            {"model": str(triple["aligned"]), "parameters": {"weight": 0.7}},
        ],
    }
    (tmp_path / "linear.yaml").write_text(yaml.safe_dump(linear))
    assert main(["merge", str(tmp_path / "linear.yaml"), str(tmp_path / "out"), "--no-copy-tokenizer", "--quiet"]) == 0
    assert not (tmp_path / "out" / "mergealign_similarity.json").exists()
    expected = _mergekit(tmp_path, "reference", linear)
    assert all(torch.equal(_tensors(tmp_path / "out")[n], t) for n, t in expected.items())


@pytest.mark.parametrize(("role", "value"), [("domain", float("nan")), ("aligned", float("inf"))])
def test_a_non_finite_checkpoint_tensor_is_named_not_merged(tmp_path, role, value):
    """A NaN / inf weight (a diverged fine-tune) would make the merged tensor NaN: the merge stops at that tensor and
    names the input and the tensor."""
    from safetensors.torch import load_file, save_file

    triple = save_triple(tmp_path / "models")
    weights = load_file(triple[role] / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][3, 4] = value
    save_file(weights, triple[role] / "model.safetensors", metadata={"format": "pt"})
    kind = "domain" if role == "domain" else "alignment"
    with pytest.raises(
        ValueError,
        match=rf"The {kind} tensor 'model.layers.1.mlp.up_proj.weight' holds 1 NaN or infinite value\(s\) of 8192",
    ):
        merge(_config(triple), tmp_path / "out", report=False)
    assert not (tmp_path / "out").exists()  # nothing half-written: the merge stopped before its output was placed
