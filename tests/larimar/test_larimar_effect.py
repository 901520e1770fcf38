"""Larimar's effect, measured on the trained tiny model (trained once and cached; see `hf_ext.testing.larimar`).

64 held-out facts (never seen together in training) are written in one shot and recalled from their prompts; 16 are
forgotten; unrelated prompts must not notice the writes; a needle is found in a context ten training episodes long.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_ext.larimar import memory as mem
from hf_ext.larimar.evaluation import answer, exact_match_recall
from hf_ext.larimar.processing_larimar import LarimarProcessor
from hf_ext.testing import larimar as facts
from tests.portable import expect


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(trained_larimar_path):
    model = AutoModelForCausalLM.from_pretrained(trained_larimar_path)
    return model, LarimarProcessor.from_pretrained(trained_larimar_path)


def test_one_shot_write_recall_and_forgetting(trained):
    model, processor = trained
    model.reset_memory()
    written = facts.evaluation_facts(64)
    chance = exact_match_recall(model, processor, written)  # the same decoder, nothing in memory
    expect("recall, empty memory", chance, at_most=0.1)
    model.write_memory([f.text for f in written], processor=processor)
    expect("recall after the write", exact_match_recall(model, processor, written), at_least=0.9)
    model.forget_memory([f.text for f in written[:16]], processor=processor)
    expect("recall of the forgotten", exact_match_recall(model, processor, written[:16]), at_most=0.1)
    expect("recall of the kept", exact_match_recall(model, processor, written[16:]), at_least=0.9)
    model.reset_memory()


def test_unrelated_prompts_are_not_disturbed(trained):
    model, processor = trained
    model.reset_memory()
    unrelated = facts.filler_sentences(16, seed=11)
    before = answer(model, processor, unrelated, max_new_tokens=6)
    model.write_memory([f.text for f in facts.evaluation_facts(64)], processor=processor)
    assert model.read_memory(unrelated, processor=processor).count_nonzero() == 0  # all out of scope
    assert answer(model, processor, unrelated, max_new_tokens=6) == before
    model.reset_memory()


def test_needle_in_a_context_ten_episodes_long(trained, trained_larimar_path):
    model, processor = trained
    training_episode = json.loads((trained_larimar_path / "training_log.json").read_text())["recipe"]["episode_size"]
    haystack = facts.filler_sentences(10 * training_episode, seed=5)  # ten times what training wrote at once
    episode = model.config.episode_size  # items per memory of the hierarchical read
    needles = facts.evaluation_facts(6, seed=4321)
    positions = [(i * 97) % len(haystack) for i in range(len(needles))]
    prior = model.model.memory.prior.detach()
    hay_latents = model.encode_texts(haystack, processor)
    needle_latents = model.encode_texts([n.text for n in needles], processor)
    queries = model.encode_texts([n.prompt for n in needles], processor)
    hierarchical, flat = [], []
    for i, position in enumerate(positions):
        chunks = hay_latents.clone()
        chunks[position] = needle_latents[i]
        hierarchical.append(
            mem.hierarchical_read(
                chunks[None],
                queries[None, i : i + 1],
                prior,
                episode,
                write_fn=lambda z, m0: mem.write(z, m0, dtype=torch.float64),
                read_fn=lambda q, m: mem.read(q, m, dtype=torch.float64),
            )[0, 0]
        )
        # One memory for the whole context holds more items than its rank allows.
        one_memory = mem.write(chunks[None], prior, dtype=torch.float64)
        flat.append(mem.read(queries[None, i : i + 1], one_memory)[0, 0])
    # The model's own long-context read is this hierarchy.
    context = list(haystack)
    context[positions[0]] = needles[0].text
    torch.testing.assert_close(
        model.read_long_context(context, [needles[0].prompt], processor)[0],
        hierarchical[0].float(),
        rtol=1e-4,
        atol=1e-5,
    )
    prompts = [n.prompt for n in needles]
    found = answer(model, processor, prompts, memory_latent=torch.stack(hierarchical).float())
    found_flat = answer(model, processor, prompts, memory_latent=torch.stack(flat).float())
    assert sum(a == n.object for a, n in zip(found, needles)) >= 5
    assert sum(a == n.object for a, n in zip(found_flat, needles)) <= 1


def test_memory_survives_save_and_load(trained, tmp_path):
    model, processor = trained
    model.reset_memory()
    written = facts.evaluation_facts(32, seed=99)
    model.write_memory([f.text for f in written], processor=processor)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert answer(reloaded, processor, [f.prompt for f in written]) == answer(
        model, processor, [f.prompt for f in written]
    )
    assert torch.equal(reloaded.memory_state.memory, model.memory_state.memory)
    model.reset_memory()


def test_lora_edit_baseline_stops_at_the_target_and_leaves_the_model_unchanged(trained):
    from hf_ext.larimar.evaluation import lora_edit

    model, processor = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    written = facts.evaluation_facts(4, seed=7)
    edit = lora_edit(model, processor, written, learning_rate=1e-2, max_steps=40, target_recall=0.75)
    assert 1 <= edit["steps"] <= 40 and len(edit["recall_curve"]) == edit["steps"]
    # It stops at the first step that reaches the target, and reports whether it got there.
    assert edit["reached"] == (edit["recall"] >= 0.75)
    assert all(r < 0.75 for r in edit["recall_curve"][:-1])
    assert edit["train_and_check_cpu_seconds"] >= edit["train_cpu_seconds"] > 0
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert model.memory_state is None  # the edit runs on an empty memory
