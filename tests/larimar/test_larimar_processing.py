"""LarimarProcessor: the two tokenizers, padding, training batches, saving and loading."""

import pytest
import torch
from transformers import AutoTokenizer

from hf_ext.larimar.processing_larimar import LarimarProcessor


def test_prompts_are_left_padded_and_start_with_bos(tiny_processor, tiny_tokenizer):
    batch = tiny_processor(["The capital of France is", "Hi"])
    bos, pad = tiny_tokenizer.bos_token_id, tiny_tokenizer.pad_token_id
    for row, text in enumerate(["The capital of France is", "Hi"]):
        ids = [bos] + tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        length = len(ids)
        assert batch["input_ids"][row, -length:].tolist() == ids
        assert batch["attention_mask"][row].tolist() == [0] * (batch["input_ids"].shape[1] - length) + [1] * length
        assert (batch["input_ids"][row, : batch["input_ids"].shape[1] - length] == pad).all()
    # The memory queries are the prompts, tokenized for the encoder (right-padded).
    encoder = tiny_tokenizer(["The capital of France is", "Hi"], padding=True, return_tensors="pt")
    assert torch.equal(batch["encoder_input_ids"], encoder["input_ids"])
    assert torch.equal(batch["encoder_attention_mask"], encoder["attention_mask"])
    queried = tiny_processor(["Hi"], queries=["Where is Paris?"])
    assert torch.equal(
        queried["encoder_input_ids"], tiny_processor.encode_memory(["Where is Paris?"])["encoder_input_ids"]
    )


def test_episode_batches_mask_padding_and_end_with_eos(tiny_processor, tiny_tokenizer):
    texts = ["Paris visited Lima", "A much longer sentence to remember here"]
    batch = tiny_processor.episode(texts, prompts=["Paris visited", "A much longer"])
    eos = tiny_tokenizer.eos_token_id
    for row, text in enumerate(texts):
        ids = [tiny_tokenizer.bos_token_id] + tiny_tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        assert batch["labels"][row, : len(ids)].tolist() == ids
        assert (batch["labels"][row, len(ids) :] == -100).all()
        assert batch["attention_mask"][row].sum() == len(ids)
    assert batch["query_input_ids"].shape[0] == 2
    with pytest.raises(ValueError, match="Got 2 texts but 1 prompts"):
        tiny_processor.episode(texts, prompts=["one"])


def test_round_trip(tmp_path, tiny_processor, tiny_tokenizer):
    tiny_processor.save_pretrained(tmp_path)
    assert (tmp_path / "encoder_tokenizer").is_dir() and (tmp_path / "decoder_tokenizer").is_dir()
    loaded = LarimarProcessor.from_pretrained(tmp_path)
    text = ["Rivers carry sand from the mountains to the sea."]
    for key, value in tiny_processor(text).items():
        assert torch.equal(loaded(text)[key], value), key
    assert loaded.batch_decode(tiny_processor(text)["input_ids"]) == tiny_processor.batch_decode(
        tiny_processor(text)["input_ids"]
    )


def test_different_tokenizers_for_encoder_and_decoder(tmp_path, tiny_tokenizer):
    from hf_ext.testing import build_tokenizer

    small = build_tokenizer(vocab_size=300)
    processor = LarimarProcessor(small, tiny_tokenizer)
    processor.save_pretrained(tmp_path)
    loaded = LarimarProcessor.from_pretrained(tmp_path)
    assert len(loaded.encoder_tokenizer) == len(small) and len(loaded.decoder_tokenizer) == len(tiny_tokenizer)
    assert AutoTokenizer.from_pretrained(tmp_path / "encoder_tokenizer").vocab_size == small.vocab_size


def test_bad_input(tiny_processor, larimar_factory, tiny_llama_path):
    with pytest.raises(ValueError, match="text is empty"):
        tiny_processor([])
    with pytest.raises(TypeError, match="must be a string or a list of strings"):
        tiny_processor([1, 2])
    with pytest.raises(ValueError, match="Got 1 prompts but 2 queries"):
        tiny_processor(["a"], queries=["b", "c"])
    with pytest.raises(ValueError, match="padding_side='middle'"):
        tiny_processor(["a"], padding_side="middle")
    model = larimar_factory("gpt2")
    tiny_processor.check_model(model)
    # The embeddings themselves are compared (not the config's vocab_size), with every id the tokenizer can produce.
    larger = AutoTokenizer.from_pretrained(tiny_llama_path)
    larger.add_tokens([f"<extra_{i}>" for i in range(40)])
    with pytest.raises(
        ValueError,
        match=r"The decoder tokenizer .* produces token ids up to 1063 but the model's decoder \(gpt2\) embeds only 1024",
    ):
        LarimarProcessor(tiny_processor.encoder_tokenizer, larger).check_model(model)
