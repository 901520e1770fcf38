"""Bad input to Larimar is a clear error before any work (or a warning that says what to do): configuration typos,
a decoder that is not a causal LM, a processor folder that is one tokenizer, a lost memory file, texts with nothing
to encode, and tokenizers that do not fit the model."""

import json
import re
import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from hf_ext.larimar.configuration_larimar import LarimarConfig
from hf_ext.larimar.modeling_larimar import MEMORY_FILE, LarimarForCausalLM
from hf_ext.larimar.processing_larimar import LarimarProcessor
from hf_ext.larimar.training import LarimarEpisodeCollator


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latent_sise": 64}, r"unknown argument\(s\) 'latent_sise' \(did you mean 'latent_size'\?\)"),
        ({"memroy_size": 64}, r"'memroy_size' \(did you mean 'memory_size'\?\)"),
        ({"scope_treshold": 0.3, "zzz": 1}, r"'scope_treshold' \(did you mean 'scope_threshold'\?\), 'zzz';"),
    ],
)
def test_unknown_config_keys_are_refused_with_a_suggestion(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LarimarConfig(**kwargs)


def test_keys_transformers_writes_or_reads_are_still_accepted(tmp_path):
    config = LarimarConfig(latent_size=8, memory_size=4, pad_token_id=0, torch_dtype="float32", _private=1)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # Common attributes that configurations of earlier transformers releases carry.
    saved.update(use_bfloat16=False, max_length=20, tie_word_embeddings=True, architectures=["LarimarForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = AutoConfig.from_pretrained(tmp_path, memory_size=5)
    assert (loaded.latent_size, loaded.memory_size) == (8, 5)


def test_a_decoder_that_is_not_a_causal_lm_is_refused(tiny_bert_path, tiny_gpt2_path):
    with pytest.raises(
        ValueError, match=r"The decoder checkpoint '.*tiny-bert.*' has no language-modeling head: .*cls\."
    ):
        LarimarForCausalLM.from_encoder_decoder_pretrained(tiny_bert_path, tiny_bert_path, latent_size=8)
    # A ready BERT "causal LM" without is_decoder=True attends both ways: not a decoder either.
    bidirectional = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_bert_path))
    with pytest.raises(ValueError, match=r"bidirectional encoder \(is_decoder=False\)"):
        LarimarForCausalLM.from_encoder_decoder_pretrained(tiny_bert_path, decoder_model=bidirectional, latent_size=8)


def test_a_folder_with_one_tokenizer_is_not_a_processor(tiny_llama_path, tiny_tokenizer, tmp_path):
    with pytest.raises(
        ValueError, match=r"holds no LarimarProcessor: it has no encoder_tokenizer and no decoder_tokenizer"
    ):
        LarimarProcessor.from_pretrained(tiny_llama_path)
    LarimarProcessor(tiny_tokenizer, tiny_tokenizer).save_pretrained(tmp_path)
    for path in (tmp_path / "decoder_tokenizer").iterdir():
        path.unlink()
    (tmp_path / "decoder_tokenizer").rmdir()
    with pytest.raises(ValueError, match=r"it has no decoder_tokenizer subfolder"):
        LarimarProcessor.from_pretrained(tmp_path)


def test_a_missing_memory_file_is_reported_and_an_empty_memory_is_saved(larimar_factory, tiny_processor, tmp_path):
    model = larimar_factory("gpt2")
    model.save_pretrained(tmp_path)  # an empty memory is written too
    assert (tmp_path / MEMORY_FILE).is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert AutoModelForCausalLM.from_pretrained(tmp_path).memory_state is None
    model.write_memory(["Alice lives in Paris."], processor=tiny_processor)
    model.save_pretrained(tmp_path)
    (tmp_path / MEMORY_FILE).unlink()
    with pytest.warns(UserWarning, match=rf"has no {MEMORY_FILE}: the model starts with an empty episodic memory"):
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.memory_state is None


def _truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    return file


@pytest.mark.parametrize("which", ["weights", "memory", "encoder", "decoder", "larimar-train"])
def test_a_truncated_safetensors_file_is_named(which, larimar_factory, tiny_processor, tmp_path, capsys):
    """Issue 29: a truncated weights file of a Larimar checkpoint (or of the encoder / decoder it is built from) was a
    bare `SafetensorError: Error while deserializing header: incomplete metadata`, naming no file."""
    import shutil

    from hf_ext.cli import main
    from hf_ext.testing import tiny_model_dir

    model = larimar_factory("gpt2")
    model.write_memory(["Alice lives in Paris."], processor=tiny_processor)
    model.save_pretrained(tmp_path / "larimar")
    tiny_processor.save_pretrained(tmp_path / "larimar")
    encoder, decoder = tiny_model_dir("tiny-bert"), tiny_model_dir("tiny-gpt2")
    if which in ("encoder", "decoder"):
        copy = shutil.copytree({"encoder": encoder, "decoder": decoder}[which], tmp_path / which)
        file = _truncate(copy / "model.safetensors")
        encoder, decoder = (copy, decoder) if which == "encoder" else (encoder, copy)
        call = lambda: LarimarForCausalLM.from_encoder_decoder_pretrained(encoder, decoder, latent_size=8)  # noqa: E731
    else:
        file = _truncate(tmp_path / "larimar" / (MEMORY_FILE if which == "memory" else "model.safetensors"))
        call = lambda: AutoModelForCausalLM.from_pretrained(tmp_path / "larimar")  # noqa: E731
    expected = rf"Cannot read the safetensors file {re.escape(str(file))}: .*truncated or corrupt .*download it again"
    if which == "larimar-train":
        argv = ["larimar-train", "--model_name_or_path", str(tmp_path / "larimar"), "--dataset_name",
                "hf-ext-testing/larimar-facts", "--per_device_train_batch_size", "16", "--output_dir",
                str(tmp_path / "out")]  # fmt: skip
        assert main(argv) == 2
        (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert line.startswith("hf-ext larimar-train: error: model_name_or_path=") and re.search(expected, line), line
        return
    with pytest.raises(ValueError, match=expected):
        call()


@pytest.mark.parametrize("method", ["write_memory", "read_memory", "forget_memory"])
@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"texts": [""]}, r"texts\[0\] is '': an empty text has nothing to encode"),
        ({"texts": ["Alice lives in Paris.", "   "]}, r"texts\[1\] is '   '"),
        ({"encoder_input_ids": torch.zeros(1, 0, dtype=torch.long)}, r"at least one token; got \(1, 0\)"),
        (
            {
                "encoder_input_ids": torch.tensor([[5, 6], [7, 8]]),
                "encoder_attention_mask": torch.tensor([[1, 1], [0, 0]]),
            },
            r"encoder_input_ids\[1\] has no token",
        ),
        (
            {"encoder_input_ids": torch.tensor([[5, 5000]])},
            r"token ids from 5 to 5000, but the encoder embeds ids 0..1023",
        ),
    ],
)
def test_inputs_with_nothing_to_encode_are_refused_before_the_encoder(
    method, inputs, match, larimar_factory, tiny_processor
):
    model = larimar_factory("gpt2")
    model.write_memory(["Bob works in Rome."], processor=tiny_processor)
    inputs = dict(inputs)
    texts = inputs.pop("texts", None)
    with pytest.raises(ValueError, match=match):
        getattr(model, method)(texts, processor=tiny_processor if texts is not None else None, **inputs)


def test_tokenizers_that_do_not_fit_the_model_are_refused(larimar_factory, tiny_tokenizer, tiny_llama_path):
    model = larimar_factory("gpt2")
    larger = AutoTokenizer.from_pretrained(tiny_llama_path)
    larger.add_tokens([f"<extra_{i}>" for i in range(40)])
    encoder_mismatch = LarimarProcessor(larger, tiny_tokenizer)
    decoder_mismatch = LarimarProcessor(tiny_tokenizer, larger)
    match = r"The {} tokenizer .* produces token ids up to 1063 but the model's {} \({}\) embeds only 1024"
    with pytest.raises(ValueError, match=match.format("encoder", "encoder", "bert")):
        model.write_memory(["Alice lives in Paris."], processor=encoder_mismatch)
    with pytest.raises(ValueError, match=match.format("decoder", "decoder", "gpt2")):
        model.read_memory(["Alice lives in Paris."], processor=decoder_mismatch)
    with pytest.raises(
        ValueError, match=r"input_ids hold token ids from \d+ to 1030, but the decoder embeds ids 0..1023"
    ):
        model.generate(**decoder_mismatch(["Alice lives in <extra_6>"]), max_new_tokens=1)
    # The training collator checks its processor against the model it is given, before the first batch.
    with pytest.raises(ValueError, match=match.format("decoder", "decoder", "gpt2")):
        LarimarEpisodeCollator(decoder_mismatch, model=model)
    # Padded embeddings larger than the tokenizer are fine.
    model.resize_token_embeddings(len(larger), pad_to_multiple_of=64)
    LarimarEpisodeCollator(decoder_mismatch, model=model)
