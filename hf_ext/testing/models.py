"""Tiny, offline, deterministic models and tokenizers.

Everything here is built on the machine, from text shipped inside the package: no file is downloaded.
The artefacts are ordinary Hugging Face folders, so they load back with `AutoTokenizer`,
`AutoModelForCausalLM` and `AutoModel.from_pretrained(folder)`, quantize with `BitsAndBytesConfig`, train,
and generate like any checkpoint. hf-ext's own tests, benchmarks and demo use them, and so can yours.

```python
>>> from transformers import AutoModelForCausalLM, AutoTokenizer
>>> from hf_ext.testing import tiny_model_dir
>>> path = tiny_model_dir("tiny-llama")  # built once, then cached
>>> model = AutoModelForCausalLM.from_pretrained(path)
>>> tokenizer = AutoTokenizer.from_pretrained(path)
```

Their fixture ids, ``"hf-ext-testing/<name>"``, are what the shipped recipes name; the commands turn them into
these folders with [`hf_ext.testing.resolve_model_name_or_path`].
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from hf_ext.caching import build_once, cache_root, hash_recipe


__all__ = [
    "CHAT_TEMPLATE",
    "TINY_MODELS",
    "TESTING_PREFIX",
    "TinyModelSpec",
    "build_tiny_causal_lm",
    "build_tiny_encoder",
    "build_tokenizer",
    "corpus_lines",
    "save_tiny_model",
    "tiny_model_dir",
]

TESTING_PREFIX = "hf-ext-testing/"
"""Prefix of the model ids that [`resolve_model_name_or_path`] builds offline instead of downloading."""

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IM_START, IM_END, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN]

# ChatML, with `{% generation %}` around assistant turns so that
# `apply_chat_template(..., return_assistant_tokens_mask=True)` marks the tokens a model should learn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Bumped whenever a builder changes what it produces, so that cached folders are rebuilt.
_BUILD_VERSION = 1


def corpus_lines() -> list[str]:
    """The English text shipped with hf-ext that the tiny tokenizer is trained on (one sentence a line)."""
    text = resources.files("hf_ext").joinpath("data/tiny_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def build_tokenizer(vocab_size: int = 1024, save_directory: str | os.PathLike | None = None):
    """Train a byte-level BPE tokenizer on [`corpus_lines`] and wrap it as a `PreTrainedTokenizerFast`.

    The tokenizer has bos / eos / pad / unk tokens, ChatML special tokens and a chat template, and encodes any
    text (byte-level: nothing is out of vocabulary). Training is deterministic: the same `vocab_size` gives
    the same vocabulary on every machine.

    Args:
        vocab_size (`int`, *optional*, defaults to 1024):
            Size of the vocabulary, special tokens included.
        save_directory (`str` or `os.PathLike`, *optional*):
            If given, the tokenizer is saved there with `save_pretrained`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {len(SPECIAL_TOKENS) + 256}."
        )
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus_lines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        cls_token=CLS_TOKEN,
        sep_token=SEP_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if save_directory is not None:
        tokenizer.save_pretrained(save_directory)
    return tokenizer


@dataclass(frozen=True)
class TinyModelSpec:
    """What [`tiny_model_dir`] builds for a name: a model family and its size."""

    family: str
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 1024
    max_position_embeddings: int = 512
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        return hash_recipe({"version": _BUILD_VERSION, **asdict(self)})


TINY_MODELS: dict[str, TinyModelSpec] = {
    "tiny-llama": TinyModelSpec(family="llama"),
    "tiny-gpt2": TinyModelSpec(family="gpt2"),
    "tiny-bert": TinyModelSpec(family="bert"),
}
"""The named tiny models: Llama- and GPT-2-family causal LMs and a BERT-style encoder."""


def _causal_lm_config(spec: TinyModelSpec, tokenizer):
    from transformers import GPT2Config, LlamaConfig

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if spec.family == "llama":
        return LlamaConfig(
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=spec.max_position_embeddings,
            tie_word_embeddings=False,
            **ids,
            **spec.extra,
        )
    if spec.family == "gpt2":
        return GPT2Config(
            n_embd=spec.hidden_size,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_inner=spec.intermediate_size,
            n_positions=spec.max_position_embeddings,
            **ids,
            **spec.extra,
        )
    raise ValueError(f"family={spec.family!r} is not a causal LM family; expected 'llama' or 'gpt2'.")


def build_tiny_causal_lm(family: str = "llama", tokenizer=None, seed: int = 0, **sizes):
    """Build a randomly initialised tiny causal LM of the Llama or GPT-2 family.

    Args:
        family (`str`, *optional*, defaults to `"llama"`):
            `"llama"` (`LlamaForCausalLM`) or `"gpt2"` (`GPT2LMHeadModel`).
        tokenizer (`PreTrainedTokenizerFast`, *optional*):
            Sets the vocabulary size and the special token ids; [`build_tokenizer`] by default.
        seed (`int`, *optional*, defaults to 0):
            Seed of the weight initialisation; the global RNG state is left untouched.
        sizes:
            Any field of [`TinyModelSpec`] (`hidden_size`, `num_layers`, `num_heads`, ...).
    """
    spec = TinyModelSpec(family=family, seed=seed, **sizes)
    return _build_model(spec, tokenizer or build_tokenizer(spec.vocab_size))


def build_tiny_encoder(tokenizer=None, seed: int = 0, **sizes):
    """Build a randomly initialised tiny BERT-style encoder (`BertModel`, with a pooler).

    Takes the same arguments as [`build_tiny_causal_lm`], without the family.
    """
    spec = TinyModelSpec(family="bert", seed=seed, **sizes)
    return _build_model(spec, tokenizer or build_tokenizer(spec.vocab_size))


def _build_model(spec: TinyModelSpec, tokenizer):
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, BertConfig, GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.family == "bert":
            config = BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=spec.hidden_size,
                num_hidden_layers=spec.num_layers,
                num_attention_heads=spec.num_heads,
                intermediate_size=spec.intermediate_size,
                max_position_embeddings=spec.max_position_embeddings,
                pad_token_id=tokenizer.pad_token_id,
                **spec.extra,
            )
            model = AutoModel.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(_causal_lm_config(spec, tokenizer))
            model.generation_config = GenerationConfig(
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
    model.eval()
    return model


def save_tiny_model(spec: TinyModelSpec | str, save_directory: str | os.PathLike) -> Path:
    """Build the model described by `spec` (a [`TinyModelSpec`] or a name of [`TINY_MODELS`]) and save it,
    with its tokenizer, to `save_directory`. Returns the folder."""
    if isinstance(spec, str):
        spec = _spec_for(spec)
    save_directory = Path(save_directory)
    tokenizer = build_tokenizer(spec.vocab_size)
    model = _build_model(spec, tokenizer)
    model.save_pretrained(save_directory)
    tokenizer.save_pretrained(save_directory)
    return save_directory


def _spec_for(name: str) -> TinyModelSpec:
    try:
        return TINY_MODELS[name]
    except KeyError:
        raise ValueError(f"Unknown tiny model {name!r}; expected one of {sorted(TINY_MODELS)}.") from None


def tiny_model_dir(name: str = "tiny-llama", cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a named tiny model (model + tokenizer), built on first use and cached.

    The folder name carries a fingerprint of the build, so a changed builder never serves a stale model. The
    build is written to a temporary folder and renamed into place, so concurrent processes never see half a
    model.
    """
    spec = _spec_for(name)
    target = cache_root(cache_dir) / "tiny" / f"{name}-{spec.fingerprint()}"
    return build_once(target, lambda staging: save_tiny_model(spec, staging))
