"""The similarity report and the card written next to a merge."""

import math
import warnings

import numpy as np
import pytest
import yaml
from mergealign_files import save_triple, write_config
from safetensors.torch import load_file

from hf_ext.mergealign import SimilarityReport, merge, similarity_report
from hf_ext.mergealign.merging import MergeAlignWarning


@pytest.fixture(scope="module")
def merged(tmp_path_factory, triple):
    root = tmp_path_factory.mktemp("report")
    config = write_config(root / "c.yaml", triple, alpha=[0.7, 0.4], scale=1.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MergeAlignWarning)  # independent fine-tunes: no warning
        report = merge(config, root / "out", copy_tokenizer=False, quiet=True)
    return report, root / "out", config


def _numpy_vectors(triple):
    base, domain, aligned = (load_file(triple[k] / "model.safetensors") for k in ("base", "domain", "aligned"))
    return {
        name: (
            (domain[name].double() - b.double()).numpy().ravel(),
            (aligned[name].double() - b.double()).numpy().ravel(),
        )
        for name, b in base.items()
    }


def test_report_figures_match_numpy(merged, triple):
    report, _, _ = merged
    vectors = _numpy_vectors(triple)
    assert list(report.per_tensor) == list(vectors)  # every tensor, in model order
    for name, (d, a) in vectors.items():
        stats = report.per_tensor[name]
        assert math.isclose(stats.cosine, d @ a / np.linalg.norm(d) / np.linalg.norm(a), rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(stats.domain_norm, np.linalg.norm(d), rel_tol=1e-5)
        assert math.isclose(stats.norm_ratio, np.linalg.norm(d) / np.linalg.norm(a), rel_tol=1e-5)
    d_all = np.concatenate([d for d, _ in vectors.values()])
    a_all = np.concatenate([a for _, a in vectors.values()])
    assert math.isclose(
        report.summary["cosine"],
        d_all @ a_all / np.linalg.norm(d_all) / np.linalg.norm(a_all),
        rel_tol=1e-5,
        abs_tol=1e-6,
    )
    assert math.isclose(report.summary["alignment_share"], d_all @ a_all / (a_all @ a_all), rel_tol=1e-5, abs_tol=1e-6)
    assert report.summary["domain_derived_from_alignment"] is False and report.warnings == []


def test_report_files_round_trip(merged):
    report, out, _ = merged
    assert (out / "mergealign_similarity.png").read_bytes()[:4] == b"\x89PNG"
    loaded = SimilarityReport.load(out)
    assert loaded.per_tensor.keys() == report.per_tensor.keys()
    for name, stats in report.per_tensor.items():
        assert math.isclose(loaded.per_tensor[name].cosine, stats.cosine, rel_tol=1e-9, abs_tol=1e-12)
    assert loaded.summary["cosine"] == report.summary["cosine"]
    layers = loaded.per_layer()
    assert sorted(layers) == [0, 1, 2]
    assert sum(s.numel for s in layers.values()) == sum(
        s.numel for n, s in report.per_tensor.items() if n.startswith("model.layers.")
    )


def test_standalone_report_equals_the_one_recorded_during_the_merge(merged, triple):
    recorded, _, _ = merged
    standalone = similarity_report(triple["base"], triple["domain"], triple["aligned"], progress=False)
    assert standalone.per_tensor.keys() == recorded.per_tensor.keys()
    for key in ("cosine", "domain_norm", "alignment_norm", "alignment_share"):
        assert math.isclose(standalone.summary[key], recorded.summary[key], rel_tol=1e-6, abs_tol=1e-9)


def test_card_carries_the_configuration_and_the_similarity(merged):
    report, out, config = merged
    text = (out / "README.md").read_text()
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["library_name"] == "hf-ext"
    assert {"mergealign", "mergekit", "merge"} <= set(metadata["tags"])
    hf_ext = metadata["hf_ext"]["config"]
    assert hf_ext["alpha"] == [0.7, 0.4] and hf_ext["scale"] == 1.1
    assert hf_ext["domain_model"].endswith("/domain") and hf_ext["alignment_model"].endswith("/aligned")
    assert hf_ext["similarity"]["cosine"] == pytest.approx(report.summary["cosine"], abs=1e-6)
    assert f"| cosine(τ_domain, τ_alignment), overall | {report.summary['cosine']:.4f} |" in text
    assert config.read_text().strip() in text  # the mergekit YAML, verbatim
    assert (out / "mergekit_config.yml").read_text() == config.read_text()


def test_a_domain_model_derived_from_the_aligned_model_is_flagged(tmp_path_factory, tmp_path):
    triple = save_triple(tmp_path_factory.mktemp("derived"), derived=True)
    with pytest.warns(MergeAlignWarning, match=r"looks derived from the aligned model .* rather than from the base"):
        report = merge(write_config(tmp_path / "c.yaml", triple), tmp_path / "out", copy_tokenizer=False, quiet=True)
    assert report.derived_from_alignment
    assert 0.8 < report.summary["alignment_share"] < 1.2  # tau_D = tau_A + an independent perturbation of equal size
    assert "**Warning.**" in (tmp_path / "out" / "README.md").read_text()
    assert SimilarityReport.load(tmp_path / "out").warnings == report.warnings
    assert similarity_report(
        triple["base"], triple["domain"], triple["aligned"], progress=False
    ).derived_from_alignment
