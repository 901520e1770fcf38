"""`memory_readout="text"`: the remembered text placed before the prompt, picked by the memory read's weights."""

import pytest
import torch

from hf_ext.larimar import memory as memory_math
from hf_ext.larimar.splicing import splice_tokens


FACTS = ["the old harbour keeps a red boat", "a short walk leads to the market", "the tall tower has a bell"]


def _text_model(larimar_factory, family="gpt2", **config):
    config = {"memory_readout": "text", "scope_threshold": None, **config}
    model = larimar_factory(family, **config)
    with torch.no_grad():  # a zero latent is then exactly the decoder
        model.model.prefix_projection.weight.zero_()
        model.model.embedding_projection.weight.zero_()
    return model


def _plain_logits(model, processor, texts):
    """The decoder's own logits (zero latent, masked slot) on each text, one at a time."""
    rows = []
    for ids in processor.decoder_ids(texts, False, None):
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            rows.append(model(input_ids=input_ids, memory_latent=torch.zeros(1, model.config.latent_size)).logits[0])
    return rows


def test_item_weights_combine_the_stored_items_into_the_read():
    torch.manual_seed(0)
    z = torch.randn(1, 6, 16, dtype=torch.float64)
    reference = torch.randn(24, 16, dtype=torch.float64)
    memory, precision = memory_math.ridge_memory(1, 24, 16, 1e-6, dtype=torch.float64)
    keys = memory_math.reference_keys(z, reference)
    for row in range(6):  # one write per call, as write_memory does
        memory, precision = memory_math.sequential_write(
            z[:, row : row + 1], keys[:, row : row + 1], memory, precision
        )
    queries = torch.randn(1, 5, 16, dtype=torch.float64)
    query_keys = memory_math.reference_keys(queries, reference)
    weights = memory_math.item_weights(query_keys, keys, precision)
    assert weights.shape == (1, 5, 6)
    torch.testing.assert_close(weights @ z, memory_math.read_with_keys(query_keys, memory), rtol=1e-9, atol=1e-9)
    # A stored item reads itself: its weights are one-hot (up to the ridge).
    own = memory_math.item_weights(keys, keys, precision)[0]
    torch.testing.assert_close(own, torch.eye(6, dtype=torch.float64), atol=1e-4, rtol=0)


def test_item_weights_refuse_mismatched_keys():
    with pytest.raises(ValueError, match="do not match a precision"):
        memory_math.item_weights(torch.ones(1, 2, 4), torch.ones(1, 3, 5), torch.eye(4)[None])
    with pytest.raises(ValueError, match="precision"):
        memory_math.item_weights(torch.ones(2, 4), torch.ones(1, 3, 4), torch.eye(4)[None])


@pytest.mark.parametrize("side", ["left", "right"])
def test_splice_context_places_each_context_after_the_bos_and_maps_positions_back(side):
    bos, pad = 1, 0
    rows = [[1, 5, 6, 7], [1, 8], [9, 10, 11]]  # the last row has no BOS
    contexts = [[20, 21], None, [30]]
    length = max(map(len, rows))
    input_ids = torch.full((3, length), pad)
    mask = torch.zeros(3, length, dtype=torch.long)
    labels = torch.full((3, length), -100)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        input_ids[i, span], mask[i, span], labels[i, span] = torch.tensor(row), 1, torch.tensor(row)
    spliced = splice_tokens(input_ids, mask, contexts, pad_token_id=pad, bos_token_id=bos, labels=labels)
    expected = [[1, 20, 21, 5, 6, 7], [1, 8], [30, 9, 10, 11]]
    width = spliced.input_ids.shape[1]
    assert width == 6
    for i, row in enumerate(expected):
        real = spliced.attention_mask[i].bool()
        assert spliced.input_ids[i, real].tolist() == row
        assert bool(real[-1] if side == "left" else real[0])  # padded on the same side as the input
        context = set(contexts[i] or ())
        assert spliced.labels[i, real].tolist() == [-100 if t in context else t for t in row]
        positions = spliced.positions[i, mask[i].bool()]
        new_tokens = spliced.input_ids[i, positions].tolist()
        if rows[i][0] == bos and contexts[i]:
            # the BOS position maps to the last context token (it has seen BOS + context); the rest to themselves
            assert new_tokens == [contexts[i][-1]] + rows[i][1:]
        else:
            assert new_tokens == rows[i]
    with pytest.raises(ValueError, match="one per row"):
        splice_tokens(input_ids, mask, contexts[:2], pad_token_id=pad, bos_token_id=bos)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_context_readout_equals_the_decoder_given_the_fact_as_text(larimar_factory, tiny_processor, family):
    model = _text_model(larimar_factory, family)
    model.write_memory(FACTS, processor=tiny_processor)
    prompts = ["the old harbour keeps a", "the tall tower has a"]
    assert model.read_memory_items(prompts, tiny_processor) == [0, 2]
    texts = [f"New fact: {FACTS[0]}.\n{prompts[0]}", f"New fact: {FACTS[2]}.\n{prompts[1]}"]
    references = _plain_logits(model, tiny_processor, texts)
    for side in ("left", "right"):
        inputs = tiny_processor(prompts, padding_side=side)
        with torch.no_grad():
            logits = model(**inputs).logits
        assert logits.shape[:2] == inputs["input_ids"].shape
        for row, reference in enumerate(references):
            keep = inputs["attention_mask"][row].bool()
            ours = logits[row, keep]
            torch.testing.assert_close(ours, reference[-ours.shape[0] :], atol=1e-4, rtol=1e-4)
    # generate returns the prompts as given, followed by what the decoder writes after the fact and the prompt
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": tiny_processor.decoder_tokenizer.pad_token_id}
    inputs = tiny_processor(prompts)
    generated = model.generate(**inputs, **kwargs)
    assert torch.equal(generated[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    for row, text in enumerate(texts):
        alone = torch.tensor(tiny_processor.decoder_ids([text], False, None))
        expected = model.generate(input_ids=alone, memory_latent=torch.zeros(1, model.config.latent_size), **kwargs)
        assert generated[row, inputs["input_ids"].shape[1] :].tolist() == expected[0, alone.shape[1] :].tolist()
    # beam search with several sequences per prompt, and a dict output: the prompts are restored row by row
    beams = model.generate(
        **inputs, **kwargs, num_beams=2, num_return_sequences=2, return_dict_in_generate=True, output_scores=True
    )
    assert beams.sequences.shape[0] == 4
    prompt_ids = inputs["input_ids"].repeat_interleave(2, dim=0)
    assert torch.equal(beams.sequences[:, : prompt_ids.shape[1]], prompt_ids)


def test_context_readout_with_labels_scores_the_prompt_tokens_only(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory)
    model.write_memory(FACTS, processor=tiny_processor)
    inputs = tiny_processor(["the old harbour keeps a red boat"], padding_side="right")
    labels = inputs["input_ids"].clone()
    with torch.no_grad():
        output = model(**inputs, labels=labels)
    expected = torch.nn.functional.cross_entropy(output.logits[0, :-1], labels[0, 1:])
    torch.testing.assert_close(output.loss, expected)


def test_out_of_scope_and_empty_memory_leave_the_decoder_alone(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory)
    prompt = ["a short walk leads to the"]
    inputs = tiny_processor(prompt, padding_side="right")
    reference = _plain_logits(model, tiny_processor, prompt)[0]
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits[0], reference, atol=1e-5, rtol=1e-5)  # empty memory
    model.write_memory(FACTS[:1], processor=tiny_processor)
    model.config.scope_threshold = 0.0  # nothing is in scope
    assert model.read_memory_items(prompt, tiny_processor) == [None]
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits[0], reference, atol=1e-5, rtol=1e-5)


def test_forgetting_removes_the_text_a_query_reads(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory)
    model.write_memory(FACTS, processor=tiny_processor)
    model.forget_memory(FACTS[0], processor=tiny_processor)
    assert model.memory_texts == FACTS[1:]
    assert model.read_memory_items(["the old harbour keeps a red boat"], tiny_processor) != [0]
    assert model.read_memory_items(["the tall tower has a bell"], tiny_processor) == [1]


def test_texts_and_their_tokens_survive_save_and_load(larimar_factory, tiny_processor, tmp_path):
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM

    model = _text_model(larimar_factory)
    model.write_memory(FACTS, processor=tiny_processor)
    model.save_pretrained(tmp_path)
    # Without a processor beside it, the memory loads unchecked, and a text read-out refuses to insert its texts.
    unchecked = LarimarForCausalLM.from_pretrained(tmp_path).eval()
    assert unchecked.memory_texts == FACTS and not unchecked.memory_state.checked
    with pytest.raises(ValueError, match=r"loaded from .*larimar_memory.safetensors .* none was available"):
        unchecked(**tiny_processor(["the tall tower has a"]))
    unchecked.processor = tiny_processor  # a processor at hand: the texts are tokenized (and checked) on first use
    with torch.no_grad():
        torch.testing.assert_close(
            unchecked(**tiny_processor(["the tall tower has a"])).logits,
            model(**tiny_processor(["the tall tower has a"])).logits,
        )
    tiny_processor.save_pretrained(tmp_path)  # the processor saved beside the model: from_pretrained checks with it
    loaded = LarimarForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.memory_state.checked
    assert loaded.config.memory_readout == "text"
    assert loaded.memory_texts == FACTS
    assert loaded.memory_state.text_tokens == model.memory_state.text_tokens
    inputs = tiny_processor(["the tall tower has a"], padding_side="right")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_context_readout_refuses_what_it_cannot_place(larimar_factory, tiny_processor):
    from hf_ext.larimar.configuration_larimar import LarimarConfig

    model = _text_model(larimar_factory)
    encoded = tiny_processor.encode_memory(FACTS)
    with pytest.raises(ValueError, match="needs the texts"):
        model.write_memory(**encoded)
    assert model.memory_state is None  # refused before anything was written
    model.write_memory(FACTS, processor=tiny_processor)
    inputs = tiny_processor(["the tall tower has a"])
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with pytest.raises(ValueError, match="needs input_ids"):
        model(inputs_embeds=embeds, encoder_input_ids=inputs["encoder_input_ids"])
    with pytest.raises(ValueError, match="memory_readout='bogus' is not supported"):
        LarimarConfig(memory_readout="bogus")
    with pytest.raises(ValueError, match="must be a string with"):
        LarimarConfig(text_template="Fact: {text}\n")


def test_calibrated_scope_threshold_keeps_the_asked_share_of_neighbours_in_scope(larimar_factory, tiny_processor):
    from types import SimpleNamespace

    from hf_ext.larimar.evaluation import calibrate_scope_threshold, scope_distances

    model = _text_model(larimar_factory)
    records = [
        SimpleNamespace(
            rewrite_prompt=f"the {place} keeps a",
            rewrite_text=f"the {place} keeps a {thing}",
            paraphrase_prompts=(f"in the {place} you find a",),
            neighbourhood_prompts=(f"the {other} keeps a", f"a walk to the {other} and"),
        )
        for place, thing, other in [
            ("harbour", "boat", "market"),
            ("tower", "bell", "garden"),
            ("mill", "wheel", "road"),
        ]
    ]
    for rate in (0.0, 0.5, 1.0):
        result = calibrate_scope_threshold(model, tiny_processor, records, neighbour_rate=rate)
        assert model.memory_state is None  # reset afterwards
        model.write_memory([r.rewrite_text for r in records], processor=tiny_processor)
        distances = scope_distances(model, tiny_processor, [p for r in records for p in r.neighbourhood_prompts])
        manual = [d <= result["scope_threshold"] for d in distances]
        assert sum(manual) / len(manual) == result["neighbourhood_in_scope"] <= rate
        # the threshold is the tightest one that still admits the allowed share: the next neighbour is just above it
        if rate < 1.0:
            assert sorted(distances)[int(rate * len(distances))] > result["scope_threshold"]
        # the memory's own scope detection agrees once the threshold is set
        model.config.scope_threshold = result["scope_threshold"]
        items = model.read_memory_items([p for r in records for p in r.neighbourhood_prompts], tiny_processor)
        assert [i is not None for i in items] == [d <= result["scope_threshold"] for d in distances]
        model.reset_memory()
    with pytest.raises(ValueError, match="neighbour_rate"):
        calibrate_scope_threshold(model, tiny_processor, records, neighbour_rate=1.5)
    with pytest.raises(ValueError, match="memory is empty"):
        scope_distances(model, tiny_processor, ["the harbour"])


def test_addressing_loss_is_the_cross_entropy_over_items_and_none():
    torch.manual_seed(0)
    queries, items = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    targets = torch.tensor([[0, 3, -1], [-1, 2, 1]])
    loss = memory_math.addressing_loss(queries, items, targets, threshold=0.3, temperature=0.1)
    expected = []
    for b in range(2):
        for q in range(3):
            cosines = [float(torch.cosine_similarity(queries[b, q], items[b, n], dim=0)) for n in range(4)]
            logits = torch.tensor(cosines + [0.7]) / 0.1
            label = int(targets[b, q]) if targets[b, q] >= 0 else 4
            expected.append(-logits.log_softmax(0)[label])
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="targets must be item indices"):
        memory_math.addressing_loss(queries, items, torch.full((2, 3), 4), threshold=0.3)
    with pytest.raises(ValueError, match="do not match queries"):
        memory_math.addressing_loss(queries, items, targets[:, :2], threshold=0.3)


def test_context_objective_trains_the_addressing_only(larimar_factory, tiny_processor):
    model = _text_model(larimar_factory, scope_threshold=0.3, episode_size=4)
    texts = FACTS + ["the green garden grows a rose"]
    queries = ["which boat does the harbour keep", "where does the walk lead", "what does the tower hold", "the rose"]
    batch = tiny_processor.episode(texts, queries)
    model.train()
    for module in model.modules():  # the same encodings in the oracle below
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    output = model(**batch)
    # the oracle: the first half of the episode is stored, the second half's queries address nothing
    z = model.model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])[None]
    q = model.model.encode(batch["query_input_ids"], batch["query_attention_mask"])[None]
    expected = memory_math.addressing_loss(q, z[:, :2], torch.tensor([[0, 1, -1, -1]]), threshold=0.3)
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.model.latent_projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.model.decoder.parameters())  # the decoder is not even run
    model.zero_grad()
    del batch["query_input_ids"], batch["query_attention_mask"]
    with pytest.raises(ValueError, match="needs query_input_ids"):
        model(**batch)


@pytest.mark.parametrize("addressing", ["memory", "nearest"])
def test_item_addressing_picks_the_item_its_rule_says(larimar_factory, tiny_processor, addressing):
    from hf_ext.testing.larimar import filler_sentences

    model = _text_model(larimar_factory, item_addressing=addressing)
    texts = filler_sentences(60, seed=1)  # more items than the memory's capacity (48)
    with pytest.warns(UserWarning, match="can tell apart at most"):
        model.write_memory(texts, processor=tiny_processor, replace=False)  # filler sentences may share beginnings
    queries = filler_sentences(12, seed=2) + texts[:4]
    state = model.memory_state
    q = model.encode_texts(queries, tiny_processor)
    if addressing == "nearest":
        expected = torch.nn.functional.cosine_similarity(q[:, None], state.latents[None], dim=-1).argmax(-1)
    else:
        keys = state.keys(q[None])
        expected = memory_math.item_weights(keys, state.keys(state.latents[None]), state.precision[None])[0].argmax(-1)
    assert model.read_memory_items(queries, tiny_processor) == expected.tolist()
    if addressing == "nearest":  # a stored text addresses itself
        assert model.read_memory_items(texts[:4], tiny_processor) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="item_addressing='bogus' is not supported"):
        type(model.config)(item_addressing="bogus")
