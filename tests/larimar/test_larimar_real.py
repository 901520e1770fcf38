"""The Larimar stage on real models (all-MiniLM-L6-v2 + SmolLM2-135M-Instruct), short version, and the scoring it
relies on (checked on tiny models against a per-fact oracle)."""

import json

import pytest
import torch

from examples.larimar.experiment import REAL_SIZES, RealLarimarStageConfig, answer_log_probs
from examples.larimar.model import RealLarimarRecipe
from hf_ext.demo import DemoContext
from hf_ext.real_models import real_models_available
from hf_ext.testing import larimar as facts


needs_real = pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)")


def _oracle_log_prob(model, processor, fact, latent=None):
    """log p(object | prompt) from one unpadded sequence, summed token by token."""
    ids = processor._decoder_ids([fact.text], False, None)[0]
    prompt = processor._decoder_ids([fact.prompt], False, None)[0]
    kwargs = {} if latent is None else {"memory_latent": latent[None]}
    with torch.no_grad():
        log_probs = model(input_ids=torch.tensor([ids]), **kwargs).logits[0].double().log_softmax(-1)
    return sum(log_probs[p - 1, ids[p]].item() for p in range(len(prompt), len(ids)))


def test_answer_log_probs_match_one_fact_at_a_time(tiny_llama_path, tiny_processor, larimar_factory):
    from transformers import AutoModelForCausalLM

    written = facts.evaluation_facts(6, seed=3)
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    scores = answer_log_probs(plain, tiny_processor, written, batch_size=4)  # padded batches of unequal lengths
    assert scores == pytest.approx([_oracle_log_prob(plain, tiny_processor, f) for f in written], abs=1e-4)

    larimar = larimar_factory("llama")
    latents = torch.randn(len(written), larimar.config.latent_size, generator=torch.Generator().manual_seed(0))
    scores = answer_log_probs(larimar, tiny_processor, written, memory_latent=latents, batch_size=4)
    expected = [_oracle_log_prob(larimar, tiny_processor, f, latents[i]) for i, f in enumerate(written)]
    assert scores == pytest.approx(expected, abs=1e-4)
    zero = answer_log_probs(larimar, tiny_processor, written)  # no latent: an empty memory
    assert zero == pytest.approx(
        [_oracle_log_prob(larimar, tiny_processor, f, latents[0] * 0) for f in written], abs=1e-4
    )
    assert all(s < 0 for s in scores)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_forget", 0, "num_forget=0 is out of range"),
        ("num_forget", 32, "num_forget=32 is out of range"),
        ("num_edit", 33, "num_edit=33 is out of range"),
        ("lora_target", 0.0, "lora_target=0.0 is out of range"),
    ],
)
def test_stage_config_names_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        RealLarimarStageConfig(**{field: value})


def test_recipe_fingerprint_follows_the_recipe():
    assert RealLarimarRecipe().fingerprint() == RealLarimarRecipe().fingerprint()
    assert RealLarimarRecipe(steps=3).fingerprint() != RealLarimarRecipe().fingerprint()
    with pytest.raises(ValueError, match="episode_size=1 is out of range"):
        RealLarimarRecipe(episode_size=1)


@pytest.fixture(scope="module")
def short_stage(tmp_path_factory):
    from examples.larimar.experiment import run_real

    output_dir = tmp_path_factory.mktemp("larimar-real")
    result = run_real(DemoContext(output_dir=output_dir, real=True), size="short")
    return output_dir, result


@pytest.mark.real
@pytest.mark.slow
@needs_real
def test_short_stage_recalls_written_facts_and_forgets(short_stage):
    output_dir, result = short_stage
    saved = json.loads((output_dir / "larimar_real.json").read_text())
    figures = saved["figures"]
    config = REAL_SIZES["short"]
    n, k = config.num_facts, config.num_forget
    # Without memory the answers are at chance (1 in 100); one write makes the unseen facts recallable.
    assert figures["recall, SmolLM2 (no memory)"] <= 0.1
    assert figures["recall, Larimar with an empty memory"] <= 0.1
    assert figures["recall after the one-shot write"] >= figures["recall, Larimar with an empty memory"] + 0.2
    # Forgetting removes the forgotten facts (at most one of them still recalled) and keeps the others.
    assert figures[f"recall of the {k} forgotten facts"] <= 1 / k
    assert figures[f"recall of the {n - k} kept facts"] >= figures[f"recall of the {k} forgotten facts"] + 0.15
    # The write is much faster than LoRA steps on the same facts.
    assert figures["edit speed-up, memory write over LoRA"] >= 10
    assert all(p.is_file() for p in result.plots)


@pytest.mark.real
@pytest.mark.slow
@needs_real
def test_short_stage_dominance_comes_from_the_saved_scores(short_stage):
    from examples.larimar.experiment import EMPTY, PLAIN, WRITTEN
    from hf_ext.risk import relative_dominance

    output_dir, _ = short_stage
    saved = json.loads((output_dir / "larimar_real.json").read_text())
    scores = saved["log_probs"]
    assert set(scores) == {WRITTEN, EMPTY, PLAIN}
    assert all(len(v) == REAL_SIZES["short"].num_facts for v in scores.values())
    # With the facts written, the correct answer is much more likely, fact by fact.
    better = sum(w > e for w, e in zip(scores[WRITTEN], scores[EMPTY])) / len(scores[WRITTEN])
    assert better >= 0.75
    recomputed = relative_dominance(scores, order=1, paired=True, n_bootstrap=200, seed=0)
    assert recomputed.ranking[0] == WRITTEN
    assert set(recomputed.dominated_by(WRITTEN)) == {EMPTY, PLAIN}
    assert saved["risk"]["ranking"][0] == WRITTEN
