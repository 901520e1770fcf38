"""write_memory / forget_memory / reset_memory / read_memory, scope detection, saving the memory, bad input."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_ext.larimar import memory as mem
from hf_ext.larimar.modeling_larimar import MEMORY_FILE


FACTS = [
    "The capital of France is Paris.",
    "Rivers carry sand from the mountains to the sea.",
    "She wrote the numbers on the back of an envelope.",
    "A small library can change a town.",
    "The morning train left the station late.",
    "When the power went out, the children built a fort.",
]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_write_then_read_returns_the_written_latents(larimar_factory, tiny_processor):
    model = larimar_factory("gpt2", latent_size=48, memory_ridge=1e-8, scope_threshold=None)
    assert model.write_memory(FACTS[:3], processor=tiny_processor) == 3
    assert model.write_memory(FACTS[3:], processor=tiny_processor) == 6
    latents = model.encode_texts(FACTS, tiny_processor)
    assert _rel(model.read_memory(FACTS, processor=tiny_processor), latents) < 1e-5
    # The sequential memory equals the closed-form ridge solution over everything written.
    state = model.memory_state
    keys = latents.double() @ torch.linalg.pinv(state.reference.double())
    gram = keys.T @ keys + 1e-8 * torch.eye(keys.shape[1], dtype=torch.float64)
    expected = torch.linalg.solve(gram, keys.T @ latents.double())
    assert _rel(state.memory, expected) < 1e-6
    assert state.memory.dtype == torch.float64  # kept in float64 whatever the model dtype


def test_forget_equals_never_having_written(larimar_factory, tiny_processor):
    # The untrained encoder's latents are nearly parallel, so the ridge system is ill-conditioned: a ridge of 0.1
    # keeps the float64 cancellation error of forgetting near 1e-7.
    config = {"latent_size": 48, "scope_threshold": None, "memory_ridge": 0.1}
    model = larimar_factory("llama", **config)
    model.write_memory(FACTS, processor=tiny_processor)
    assert model.forget_memory(FACTS[:2], processor=tiny_processor) == 4
    fresh = larimar_factory("llama", **config)
    fresh.write_memory(FACTS[2:], processor=tiny_processor)
    # The same texts encoded in a batch of 6 and of 4 may differ in the last bits (batch-size dependent BLAS).
    torch.testing.assert_close(model.memory_state.latents, fresh.memory_state.latents, rtol=1e-5, atol=1e-6)
    assert _rel(model.memory_state.memory, fresh.memory_state.memory) < 1e-5
    forgotten = model.read_memory(FACTS[:2], processor=tiny_processor)
    assert _rel(forgotten, model.encode_texts(FACTS[:2], tiny_processor)) > 0.05
    with pytest.warns(UserWarning, match="1 of the 1 items to forget are not in the memory and were skipped: 'Never"):
        assert model.forget_memory(["Never written."], processor=tiny_processor) == 4
    model.reset_memory()
    assert model.memory_state is None
    assert torch.count_nonzero(model.read_memory(FACTS, processor=tiny_processor)) == 0
    with pytest.warns(UserWarning, match="memory is empty"):
        model.forget_memory(FACTS[:1], processor=tiny_processor)


def _ridge_solution(state, ridge):
    """argmin_M ||K M - Z||² + ridge ||M||² over the stored latents Z and their reference keys K, solved directly."""
    latents = state.latents.double()
    keys = latents @ torch.linalg.pinv(state.reference.double())
    gram = keys.T @ keys + ridge * torch.eye(keys.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, keys.T @ latents)


@pytest.mark.parametrize("precision", ["bf16-autocast-write", "bf16-weights"])
def test_forget_finds_items_whatever_their_encoding(precision, larimar_factory, tiny_processor):
    model = larimar_factory("llama", latent_size=48, scope_threshold=None, memory_ridge=0.1)
    if precision == "bf16-weights":
        model.to(torch.bfloat16)
    # Written as one batch of 6 (under bf16 autocast: e.g. from a Trainer with bf16=True) ...
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-autocast-write"):
        model.write_memory(FACTS, processor=tiny_processor)
    written = model.memory_state.latents.clone()
    # ... and forgotten in another batch, in another order, with other padding (and without autocast).
    forget = [FACTS[1], "Never written.", FACTS[0]]
    if precision == "bf16-autocast-write":
        again = model.encode_texts(forget, tiny_processor)[[2, 0]]
        assert not torch.isclose(again, written[:2], rtol=1e-4, atol=1e-5).all()  # the old matching missed them
    with pytest.warns(UserWarning, match=r"1 of the 3 items to forget are not in the memory .*: 'Never written.'"):
        assert model.forget_memory(forget, processor=tiny_processor) == 4
    state = model.memory_state
    assert torch.equal(state.latents, written[2:])  # exactly the latents written for the others remain
    assert _rel(state.memory, _ridge_solution(state, 0.1)) < 1e-5
    # Forgetting is not repeated: both are gone now.
    with pytest.warns(UserWarning, match=r"2 of the 2 items .*'The capital of France is Paris.'"):
        assert model.forget_memory(FACTS[:2], processor=tiny_processor) == 4


def test_items_without_tokens_are_matched_by_their_nearest_latent(larimar_factory, tiny_processor):
    # As restored from a memory file written before the tokens were stored.
    model = larimar_factory("gpt2", latent_size=48, scope_threshold=None, memory_ridge=0.1)
    model.write_memory(FACTS, processor=tiny_processor)
    model.memory_state.tokens = [None] * 6
    written = model.memory_state.latents.clone()
    assert model.forget_memory([FACTS[3], FACTS[0]], processor=tiny_processor) == 4
    assert torch.equal(model.memory_state.latents, written[[1, 2, 4, 5]])
    assert _rel(model.memory_state.memory, _ridge_solution(model.memory_state, 0.1)) < 1e-5
    with pytest.warns(UserWarning, match="'Never written.'"):
        model.forget_memory(["Never written."], processor=tiny_processor)


def test_out_of_scope_queries_read_zero(larimar_factory, tiny_processor):
    model = larimar_factory("gpt2", scope_threshold=1e-3)
    model.write_memory(FACTS[:3], processor=tiny_processor)
    queries = FACTS[:3] + ["Unrelated question about the weather?"]
    latents = model.encode_texts(queries, tiny_processor)
    distances = 1 - (
        torch.nn.functional.normalize(latents, dim=-1) @ torch.nn.functional.normalize(latents[:3], dim=-1).T
    ).amax(-1)
    read = model.read_memory(queries, processor=tiny_processor)
    unscoped = model.read_memory(queries, processor=tiny_processor, scope=False)
    for i in range(4):
        if distances[i] <= 1e-3:
            torch.testing.assert_close(read[i], unscoped[i])
            assert read[i].norm() > 0
        else:
            assert torch.count_nonzero(read[i]) == 0
    assert distances[3] > 1e-3  # the unrelated question is out of scope


def test_memory_is_saved_and_restored(larimar_factory, tiny_processor, tmp_path):
    model = larimar_factory("gpt2")
    model.write_memory(FACTS, processor=tiny_processor)
    model.save_pretrained(tmp_path)
    assert (tmp_path / MEMORY_FILE).is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for name in ("memory", "precision", "reference", "latents"):
        assert torch.equal(getattr(loaded.memory_state, name), getattr(model.memory_state, name)), name
    assert loaded.memory_state.tokens == model.memory_state.tokens and None not in loaded.memory_state.tokens
    torch.testing.assert_close(
        loaded.read_memory(FACTS[:2], processor=tiny_processor), model.read_memory(FACTS[:2], processor=tiny_processor)
    )
    # Saving an empty memory replaces a stale file with an empty memory (a missing file means a lost memory).
    loaded.reset_memory()
    loaded.save_pretrained(tmp_path)
    assert (tmp_path / MEMORY_FILE).is_file()
    assert AutoModelForCausalLM.from_pretrained(tmp_path).memory_state is None


def test_a_memory_from_another_config_is_refused(larimar_factory, tiny_processor, tmp_path):
    model = larimar_factory("gpt2")
    model.write_memory(FACTS[:2], processor=tiny_processor)
    model.save_pretrained(tmp_path)
    other = larimar_factory("gpt2", memory_size=40)
    with pytest.raises(ValueError, match="belongs to another configuration"):
        other.load_memory(tmp_path / MEMORY_FILE)
    from hf_ext.serialization import save_tensors

    save_tensors(tmp_path / "other.safetensors", {"x": torch.zeros(1)}, metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="is not a Larimar memory file"):
        model.load_memory(tmp_path / "other.safetensors")


def test_bad_input_is_reported(larimar_factory, tiny_processor):
    model = larimar_factory("gpt2", latent_size=8, memory_size=6)
    with pytest.raises(ValueError, match="texts is empty"):
        model.write_memory([], processor=tiny_processor)
    with pytest.raises(ValueError, match="Pass processor=LarimarProcessor"):
        model.write_memory(FACTS[:1])
    with pytest.warns(UserWarning, match="holds 7 items but can tell apart at most 6"):
        model.write_memory(FACTS + ["One more sentence to remember."], processor=tiny_processor)
    assert torch.isfinite(model.memory_state.memory).all()  # over capacity: a warning, never NaN
    with pytest.raises(ValueError, match="context must be a non-empty list"):
        model.read_long_context("one string", ["query"], tiny_processor)


def test_long_context_read_is_the_hierarchical_read(larimar_factory, tiny_processor):
    model = larimar_factory("gpt2", latent_size=48, episode_size=2)
    latent = model.read_long_context(FACTS, ["The capital of France is"], tiny_processor)
    chunks = model.encode_texts(FACTS, tiny_processor)
    query = model.encode_texts(["The capital of France is"], tiny_processor)
    expected = mem.hierarchical_read(
        chunks[None],
        query[None],
        model.model.memory.prior.detach(),
        2,
        write_fn=lambda z, m0: mem.write(z, m0, dtype=torch.float64),
        read_fn=lambda q, m: mem.read(q, m, dtype=torch.float64),
    )[0]
    torch.testing.assert_close(latent, expected.float())
    assert model.memory_state is None  # the episodic memory is left alone
