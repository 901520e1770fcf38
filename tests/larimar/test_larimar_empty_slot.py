"""`mask_empty_slot`: with a zero latent and zero-initialised projections, a Larimar is exactly its decoder."""

import pytest
import torch


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("mask_empty_slot", [False, True])
def test_zero_latent_is_the_plain_decoder_only_with_the_slot_masked(
    larimar_factory, tiny_processor, tiny_gpt2_path, tiny_llama_path, family, mask_empty_slot
):
    from transformers import AutoModelForCausalLM

    path = {"gpt2": tiny_gpt2_path, "llama": tiny_llama_path}[family]
    plain = AutoModelForCausalLM.from_pretrained(path).eval()
    model = larimar_factory(family, mask_empty_slot=mask_empty_slot)
    with torch.no_grad():  # what a new model starts from (examples.larimar.model.build_real_larimar)
        model.model.prefix_projection.weight.zero_()
        model.model.embedding_projection.weight.zero_()
    # One prompt at a time: GPT-2 numbers positions from the first (padding) column, Larimar from the first token.
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tiny_processor.decoder_tokenizer.pad_token_id}
    for prompt in ["the old harbour", "a short walk to the market was"]:
        input_ids = torch.tensor(tiny_processor.decoder_ids([prompt], False, None))
        zero = torch.zeros(1, model.config.latent_size)
        with torch.no_grad():
            ours = model(input_ids=input_ids, memory_latent=zero).logits
            theirs = plain(input_ids=input_ids).logits
        assert torch.allclose(ours, theirs, atol=1e-4) == mask_empty_slot
        if mask_empty_slot:
            generated = model.generate(input_ids=input_ids, memory_latent=zero, **kwargs)
            assert torch.equal(generated, plain.generate(input_ids=input_ids, **kwargs))
    if mask_empty_slot:  # a non-zero latent still reaches the decoder through the slot
        model.model.prefix_projection.weight.data.normal_(0, 0.3)
        with torch.no_grad():
            moved = model(input_ids=input_ids, memory_latent=torch.ones_like(zero)).logits
        assert not torch.allclose(moved, theirs, atol=1e-3)


@pytest.mark.slow
def test_natural_recipe_trains_only_the_addressing(tmp_path, tiny_bert_path, tiny_llama_path):
    from transformers import AutoModelForCausalLM

    from hf_ext.cli import main

    output = tmp_path / "out"
    overrides = {
        "--encoder_name_or_path": "hf-ext-testing/tiny-bert",
        "--decoder_name_or_path": "hf-ext-testing/tiny-llama",
        "--latent_size": "32",
        "--memory_size": "32",
        "--episode_size": "4",
        "--per_device_train_batch_size": "4",
        "--num_episodes": "3",
        "--max_steps": "3",
        "--output_dir": str(output),
    }
    argv = ["larimar-train", "--config", "trainers/larimar-natural.yaml"]
    assert main(argv + [item for pair in overrides.items() for item in pair]) == 0
    model = AutoModelForCausalLM.from_pretrained(output).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    assert model.config.mask_empty_slot and model.config.scope_threshold == 0.4
    assert model.config.memory_readout == "text"
    assert model.config.text_template == "New fact: {memory} {memory}\n"
    for name, parameter in plain.model.named_parameters():  # the decoder is untouched
        assert torch.equal(model.model.decoder.get_parameter(name), parameter), name
    # only the addressing trains: the projections into the decoder are still the zeros they started at
    assert model.model.prefix_projection.weight.abs().sum() == 0
    assert model.model.embedding_projection.weight.abs().sum() == 0
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, memory_latent=torch.zeros(1, 32)).logits, plain(input_ids=ids).logits
        )
