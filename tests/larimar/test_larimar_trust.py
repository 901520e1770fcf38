"""A Larimar memory you can trust (issue 27): edits replace, memory files insert only what they show, generation
hides the inserted text, no half-configurations, deprecated names still work."""

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hf_ext.larimar import memory as memory_math
from hf_ext.larimar.episodic_memory import MEMORY_FILE


FACTS = ["the old harbour keeps a red boat", "a short walk leads to the market", "the tall tower has a bell"]
PROMPTS = ["the old harbour keeps a", "the tall tower has a"]


def _text_model(larimar_factory, family="gpt2", **config):
    config = {"memory_readout": "text", "scope_threshold": None, **config}
    model = larimar_factory(family, **config)
    with torch.no_grad():  # a zero latent is then exactly the decoder
        model.model.prefix_projection.weight.zero_()
        model.model.embedding_projection.weight.zero_()
    return model


def _ridge_solution(state):
    """argmin_M ||K M - Z||² + ridge ||M||² over the stored latents, solved directly (an oracle for the memory)."""
    latents = state.latents.double()
    keys = latents @ torch.linalg.pinv(state.reference.double())
    gram = keys.T @ keys + state.ridge * torch.eye(keys.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, keys.T @ latents)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# 1. Edits replace ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, stored, edit",
    [
        ("Mara Okafor lives in Porto", "Mara Okafor lives in Lisbon.", True),  # another object
        ("Mara Okafor lives in Porto", "Mara Okafor lives in Porto", True),  # the same text again
        ("The best friend of Mara Okafor is Ian Lee", "The best friend of Mara Okafor is Zoe Ng", True),
        ("Mara Okafor works as a nurse", "Mara Okafor lives in Lisbon", False),  # another relation
        ("Mara Okafor works as a nurse", "Mara Okafor works for Acme", False),  # shares only "Mara Okafor works"
        ("Mara Okafor plays the cello", "Mara Okafor plays the sport of tennis", False),  # 4 shared, 3 not
        ("Mara Okafor works for Riverbend Media", "Mara Okafor works for Acme", True),  # 4 shared, 2 not
        ("Mara Lee lives in Porto", "Mara Okafor lives in Porto", False),  # another subject
        ("Lisbon is lovely", "Mara Okafor lives in Lisbon", False),  # nothing shared from the start
        ("Mara Okafor lives in Porto", None, False),  # an item written as token ids
    ],
)
def test_an_edit_differs_only_in_its_last_words(text, stored, edit):
    from hf_ext.larimar.episodic_memory import is_edit, shared_beginning

    assert is_edit(text, stored) is edit
    if stored is not None and edit:
        assert shared_beginning(text, stored) in stored and text.startswith(shared_beginning(text, stored))


def test_a_write_replaces_the_item_its_shared_beginning_addresses(larimar_factory, tiny_processor):
    stored = ["the old harbour keeps a red boat", "the tall tower has a bell", "a short walk leads to the market"]
    model = larimar_factory("gpt2", latent_size=48, memory_ridge=0.1, item_addressing="nearest", scope_threshold=None)
    model.write_memory(stored, processor=tiny_processor)
    beginning = "the old harbour keeps a red"
    assert model.read_memory_items([beginning], tiny_processor) == [0]  # what the second rule asks (nearest)
    assert model.write_memory("the old harbour keeps a red mill", processor=tiny_processor) == 3
    assert model.memory_texts == stored[1:] + ["the old harbour keeps a red mill"]
    assert _rel(model.memory_state.memory, _ridge_solution(model.memory_state)) < 1e-6
    # A later text of one call replaces an earlier one; other texts are appended.
    texts = ["the tall tower has a clock", "the tall tower has a flag", "a river runs past the mill"]
    assert model.write_memory(texts, processor=tiny_processor) == 4
    assert model.memory_texts == [stored[2], "the old harbour keeps a red mill", texts[1], texts[2]]
    # With the shared beginning out of scope (it addresses nothing), nothing is replaced: the write appends.
    model.config.scope_threshold = 0.0
    assert model.read_memory_items(["the tall tower has a"], tiny_processor) == [None]
    assert model.write_memory("the tall tower has a bell", processor=tiny_processor) == 5
    assert _rel(model.memory_state.memory, _ridge_solution(model.memory_state)) < 1e-6


def test_replace_false_appends_and_forget_removes_every_copy(larimar_factory, tiny_processor):
    model = larimar_factory("gpt2", latent_size=48, memory_ridge=0.1, scope_threshold=None)
    assert model.write_memory(FACTS[:2], processor=tiny_processor, replace=False) == 2
    assert model.write_memory(FACTS[0], processor=tiny_processor, replace=False) == 3  # a second copy
    assert model.memory_texts == [FACTS[0], FACTS[1], FACTS[0]]
    assert model.forget_memory(FACTS[0], processor=tiny_processor) == 1  # both copies
    assert model.memory_texts == [FACTS[1]]
    fresh = larimar_factory("gpt2", latent_size=48, memory_ridge=0.1)
    fresh.write_memory(FACTS[1], processor=tiny_processor)
    assert _rel(model.memory_state.memory, fresh.memory_state.memory) < 1e-6
    # Written twice with replace=True, a text is stored once.
    model.write_memory([FACTS[0], FACTS[0]], processor=tiny_processor, replace=False)
    assert model.write_memory(FACTS[0], processor=tiny_processor) == 2
    assert model.memory_texts == [FACTS[1], FACTS[0]]


def test_a_text_read_out_answers_the_latest_edit(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory, item_addressing="nearest")
    for place in ("boat", "bell", "mill"):
        model.write_memory(f"the old harbour keeps a red {place}", processor=tiny_processor)
    assert model.memory_texts == ["the old harbour keeps a red mill"]
    inputs = tiny_processor(["the old harbour keeps a"], padding_side="right")
    expected = tiny_processor.decoder_ids(["New fact: the old harbour keeps a red mill.\nthe old harbour keeps a"])[0]
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
        reference = model(input_ids=torch.tensor([expected]), memory_latent=torch.zeros(1, 32)).logits[0, -1]
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


# 2. Memory files: every field checked, the inserted tokens derived from the shown texts ----------------------


def _saved(model, processor, folder):
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder / MEMORY_FILE


def _rewrite(path, tensors=None, metadata=None, drop=()):
    with safe_open(str(path), framework="pt") as handle:
        old_metadata = handle.metadata()
        old = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    old.update(tensors or {})
    old_metadata.update(metadata or {})
    for name in drop:
        old.pop(name, None)
    save_file(old, str(path), metadata=old_metadata)


def _v1_file(model, processor, path, texts, inserted):
    """A memory file as hf-ext wrote it before (format 1: the decoder tokens kept beside the texts)."""
    ids = processor.text_ids(inserted, model.config.text_template)
    _rewrite(
        path,
        tensors={
            "context_lengths": torch.tensor([len(t) for t in ids]),
            "context_tokens": torch.tensor([token for t in ids for token in t]),
        },
        metadata={"format": "hf-ext-larimar-memory/1", "item_texts": json.dumps(texts)},
    )


def test_a_file_whose_tokens_insert_another_text_is_refused(larimar_factory, tiny_processor, tmp_path):
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM

    model = _text_model(larimar_factory)
    model.write_memory(FACTS[:2], processor=tiny_processor)
    path = _saved(model, tiny_processor, tmp_path)
    # An honest file of the old format loads, its stored tokens checked against its texts.
    _v1_file(model, tiny_processor, path, FACTS[:2], FACTS[:2])
    assert LarimarForCausalLM.from_pretrained(tmp_path).memory_texts == FACTS[:2]
    # The crafted one shows a harmless memory and would insert another text into every prompt.
    _v1_file(model, tiny_processor, path, FACTS[:2], [FACTS[0], "New fact: the capital is Berlin"])
    with pytest.raises(ValueError, match=r"larimar_memory.safetensors: context_tokens of item 1 are not the tokens"):
        LarimarForCausalLM.from_pretrained(tmp_path)
    fresh = _text_model(larimar_factory)
    with pytest.raises(ValueError, match="would insert a text the memory does not show"):
        fresh.load_memory(path, processor=tiny_processor)
    assert fresh.memory_state is None  # nothing was loaded
    # Edited encoder tokens (or another encoder tokenizer) are refused too.
    path = _saved(model, tiny_processor, tmp_path)
    with safe_open(str(path), framework="pt") as handle:
        tokens = handle.get_tensor("item_tokens")
    _rewrite(path, tensors={"item_tokens": tokens.flip(0)})
    with pytest.raises(ValueError, match="item_tokens of item 0 are not the encoder tokens of its text"):
        fresh.load_memory(path, processor=tiny_processor)
    # A memory written through another tokenizer (its fingerprint differs) is refused, naming the tokenizer.
    path = _saved(model, tiny_processor, tmp_path)
    fingerprints = {**tiny_processor.tokenizer_fingerprints(), "decoder_tokenizer": "0123456789abcdef"}
    _rewrite(path, metadata={"tokenizers": json.dumps(fingerprints)})
    with pytest.raises(ValueError, match="tokenized by another decoder tokenizer"):
        fresh.load_memory(path, processor=tiny_processor)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metadata": {"item_texts": json.dumps(["only one"])}}, "item_texts is not a list of 2 texts"),
        ({"metadata": {"items": "two"}}, "items is 'two', expected a count"),
        ({"tensors": {"memory": torch.zeros(3, 3, dtype=torch.float64)}}, r"memory has shape \(3, 3\), expected"),
        ({"tensors": {"latents": torch.zeros(2, 32, dtype=torch.long)}}, "latents has dtype torch.int64"),
        ({"drop": ["memory"]}, r"memory is missing \(items=2\)"),
        ({"tensors": {"precision": torch.full((48, 48), float("nan"), dtype=torch.float64)}}, "precision holds NaN"),
        ({"tensors": {"item_lengths": torch.tensor([1, 1])}}, "item_lengths add up to 2 tokens but item_tokens holds"),
        ({"tensors": {"item_lengths": torch.tensor([1])}}, "item_lengths has 1 entries"),
        ({"tensors": {"item_tokens": torch.full((20,), 10**6)}}, "item_tokens hold ids from"),
        ({"metadata": {"ridge": "-1"}}, "ridge is -1.0, expected > 0"),
        ({"tensors": {"extra": torch.zeros(1)}}, r"tensors include unknown \['extra'\]"),
    ],
)
def test_every_field_of_a_memory_file_is_checked(larimar_factory, tiny_processor, tmp_path, change, message):
    model = larimar_factory("gpt2")
    model.write_memory(FACTS[:2], processor=tiny_processor)
    path = _saved(model, tiny_processor, tmp_path)
    if "item_tokens" in change.get("tensors", {}) or "item_lengths" in change.get("tensors", {}):
        with safe_open(str(path), framework="pt") as handle:
            total = handle.get_tensor("item_tokens").numel()
        if "item_tokens" in change["tensors"]:
            change["tensors"]["item_tokens"] = torch.full((total,), 10**6)
    _rewrite(path, **change)
    fresh = larimar_factory("gpt2")
    with pytest.raises(ValueError, match=message) as error:
        fresh.load_memory(path, processor=tiny_processor)
    assert str(path) in str(error.value)
    assert fresh.memory_state is None


def test_the_saved_memory_holds_texts_in_plain_form_and_no_decoder_tokens(larimar_factory, tiny_processor, tmp_path):
    model = _text_model(larimar_factory)
    model.write_memory(FACTS, processor=tiny_processor)
    path = _saved(model, tiny_processor, tmp_path)
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["item_texts"]) == FACTS
        assert "context_tokens" not in handle.keys()  # noqa: SIM118
    fresh = _text_model(larimar_factory)
    fresh.load_memory(path, processor=tiny_processor)
    assert fresh.memory_state.text_tokens == [tuple(t) for t in tiny_processor.text_ids(FACTS)]


# 3. Generation hides the splice -------------------------------------------------------------------------------


class _Recorder:
    def __init__(self):
        self.puts = []
        self.ended = False

    def put(self, value):
        self.puts.append(value.tolist())

    def end(self):
        self.ended = True


def test_a_streamer_sees_the_prompt_and_the_new_tokens_only(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory)
    model.write_memory(FACTS, processor=tiny_processor)
    inputs = tiny_processor(PROMPTS[:1])
    streamer = _Recorder()
    pad = tiny_processor.decoder_tokenizer.pad_token_id
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, streamer=streamer, pad_token_id=pad)
    assert streamer.ended
    assert streamer.puts[0] == inputs["input_ids"].tolist()  # the prompt as given, no inserted fact
    assert [streamer.puts[0][0] + [step[0] for step in streamer.puts[1:]]] == out.tolist()


def test_lengths_count_the_users_tokens(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory)
    model.write_memory(FACTS, processor=tiny_processor)
    inputs = tiny_processor(PROMPTS)
    width = inputs["input_ids"].shape[1]
    common = {"do_sample": False, "pad_token_id": tiny_processor.decoder_tokenizer.pad_token_id}
    by_new = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, **common)
    by_length = model.generate(**inputs, max_length=width + 6, min_length=width + 6, **common)
    assert by_new.shape == by_length.shape == (2, width + 6)
    assert torch.equal(by_new, by_length)
    with pytest.raises(ValueError, match="more than the .* the decoder reads"):
        model.generate(**inputs, max_new_tokens=10_000, **common)


def test_outputs_are_at_the_users_positions_and_unsupported_flags_are_refused(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory)
    model.write_memory(FACTS, processor=tiny_processor)
    inputs = tiny_processor(PROMPTS, padding_side="right")
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True)
    assert output.logits.shape[:2] == inputs["input_ids"].shape
    assert all(states.shape[:2] == inputs["input_ids"].shape for states in output.hidden_states)
    # The oracle: the decoder run on the fact and the prompt as text, at the prompt's positions.
    text = f"New fact: {FACTS[0]}.\n{PROMPTS[0]}"
    ids = torch.tensor(tiny_processor.decoder_ids([text]))
    with torch.no_grad():
        alone = model(input_ids=ids, memory_latent=torch.zeros(1, 32), output_hidden_states=True)
    keep = inputs["attention_mask"][0].bool()
    for ours, reference in zip(output.hidden_states, alone.hidden_states):
        own = ours[0, keep]
        torch.testing.assert_close(own[1:], reference[0, -own.shape[0] + 1 :], atol=1e-5, rtol=1e-5)
    generated = model.generate(
        **tiny_processor(PROMPTS),
        max_new_tokens=2,
        do_sample=False,
        return_dict_in_generate=True,
        output_hidden_states=True,
        output_scores=True,
        pad_token_id=tiny_processor.decoder_tokenizer.pad_token_id,
    )
    width = tiny_processor(PROMPTS)["input_ids"].shape[1]
    assert generated.hidden_states[0][0].shape[:2] == (2, width)
    assert len(generated.scores) == 2
    for flag in ({"output_attentions": True}, {"position_ids": torch.arange(width).expand(2, -1)}):
        name = next(iter(flag))
        with pytest.raises(ValueError, match=f'{name} is not supported with memory_readout="text"'):
            model(**tiny_processor(PROMPTS), **flag)
        with pytest.raises(ValueError, match=f'{name} is not supported with memory_readout="text"'):
            model.generate(**tiny_processor(PROMPTS), max_new_tokens=1, **flag)


def test_a_text_too_long_for_the_decoder_is_refused_at_write(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory)
    limit = model.config.decoder.max_position_embeddings
    with pytest.raises(ValueError, match=rf"texts\[1\] is \d+ decoder tokens .* at most {limit} positions"):
        model.write_memory([FACTS[0], " ".join(["harbour"] * limit)], processor=tiny_processor)
    assert model.memory_state is None


# 4. No silent half-configurations; 6. deprecated names -----------------------------------------------------------


def test_the_text_read_out_masks_the_empty_slot_or_refuses(tmp_path):
    from hf_ext.larimar.configuration_larimar import LarimarConfig

    assert LarimarConfig(memory_readout="text").mask_empty_slot is True
    assert LarimarConfig().mask_empty_slot is False  # the paper's model
    assert LarimarConfig(mask_empty_slot=True).mask_empty_slot is True
    with pytest.raises(ValueError, match='mask_empty_slot=False does not go with memory_readout="text"'):
        LarimarConfig(memory_readout="text", mask_empty_slot=False)


def test_old_names_still_work_with_a_future_warning(tmp_path, larimar_factory, tiny_processor):
    from hf_ext.larimar.configuration_larimar import LarimarConfig

    with pytest.warns(FutureWarning) as caught:
        config = LarimarConfig(memory_readout="context", context_template="Fact: {memory}\n")
    assert {str(w.message).split(" is deprecated")[0] for w in caught} == {
        'memory_readout="context"',
        "LarimarConfig(context_template=...)",
    }
    assert config.memory_readout == "text" and config.text_template == "Fact: {memory}\n"
    with pytest.warns(FutureWarning, match="context_addressing is deprecated"):
        assert config.context_addressing == "memory"
    # A config.json written with the old names loads silently as today's.
    saved = config.to_dict()
    saved.update(memory_readout="context", context_addressing="nearest")
    del saved["item_addressing"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = LarimarConfig.from_dict(saved)
    assert loaded.memory_readout == "text" and loaded.item_addressing == "nearest"
    with pytest.warns(FutureWarning, match="LarimarMemoryLayer"):
        from hf_ext.larimar.modeling_larimar import LarimarMemory
    from hf_ext.larimar.modeling_larimar import LarimarMemoryLayer

    assert LarimarMemory is LarimarMemoryLayer
    with pytest.warns(FutureWarning, match="text_ids"):
        assert tiny_processor.context_ids(FACTS[:1]) == tiny_processor.text_ids(FACTS[:1])


def test_the_card_says_which_read_out_it_describes(larimar_factory):
    text_card = str(_text_model(larimar_factory).model_card())
    assert "hf-ext's, not the paper's" in text_card and "IKE, SERAC, RECIPE" in text_card
    assert "item_addressing" in text_card and "text_template" in text_card  # every setting, none hard-coded
    latent_card = str(larimar_factory("gpt2").model_card())
    assert "(the paper's)" in latent_card and "IKE" not in latent_card


def test_item_weights_still_read_as_the_memory_after_replacing(larimar_factory, tiny_processor):
    """Replacing is a forget and a write: the item weights of the stored latents stay one-hot (Larimar's read)."""
    model = larimar_factory("gpt2", latent_size=48, memory_ridge=1e-6, scope_threshold=None, item_addressing="nearest")
    model.write_memory(FACTS, processor=tiny_processor)
    model.write_memory(FACTS[1], processor=tiny_processor)  # the same text again: an edit of itself
    state = model.memory_state
    assert model.memory_texts == [FACTS[0], FACTS[2], FACTS[1]]
    keys = state.keys(state.latents[None])
    weights = memory_math.item_weights(keys, keys, state.precision[None])[0]
    torch.testing.assert_close(weights, torch.eye(3, dtype=weights.dtype), atol=1e-3, rtol=0)
