"""Processor class for Larimar: the encoder's and the decoder's tokenizers in one object."""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import torch
from transformers import BatchEncoding, ProcessorMixin

from .._checks import embedding_rows, token_id_bound
from ..paths import looks_like_local_path


__all__ = ["LarimarProcessor"]

SUBFOLDERS = ("encoder_tokenizer", "decoder_tokenizer")


class LarimarProcessor(ProcessorMixin):
    r"""
    Bundles the encoder tokenizer (for what is written to and read from memory) and the decoder tokenizer (for
    what the language model reads and writes). Saved with `save_pretrained` in `encoder_tokenizer/` and
    `decoder_tokenizer/`, loaded back with `from_pretrained`.

    ```python
    >>> processor = LarimarProcessor(encoder_tokenizer, decoder_tokenizer)
    >>> model.write_memory(["Alice lives in Paris."], processor=processor)
    >>> inputs = processor(["Alice lives in"])  # decoder prompt + memory query
    >>> processor.batch_decode(model.generate(**inputs, max_new_tokens=3))
    ```

    Args:
        encoder_tokenizer (`PreTrainedTokenizerBase`):
            Tokenizes memory texts and queries for the encoder.
        decoder_tokenizer (`PreTrainedTokenizerBase`):
            Tokenizes prompts and training texts for the decoder. Decoder sequences start with its `bos_token`
            (added when the tokenizer does not add it itself); training texts end with its `eos_token`.
    """

    def __init__(self, encoder_tokenizer, decoder_tokenizer, **kwargs):
        super().__init__(encoder_tokenizer, decoder_tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a processor saved with `save_pretrained` (a folder or a Hub repo with `encoder_tokenizer/` and
        `decoder_tokenizer/`). A single tokenizer's folder is refused: transformers would load that one tokenizer
        as both, and a decoder's tokenizer does not fit the encoder."""
        missing = _missing_subfolders(pretrained_model_name_or_path, kwargs)
        if missing:
            raise ValueError(
                f"{str(pretrained_model_name_or_path)!r} holds no LarimarProcessor: it has no {' and no '.join(missing)} "
                "subfolder (LarimarProcessor.save_pretrained writes encoder_tokenizer/ and decoder_tokenizer/), so it "
                "would load one tokenizer as both. Build the processor from the encoder's and the decoder's "
                "tokenizers: LarimarProcessor(AutoTokenizer.from_pretrained(encoder), "
                "AutoTokenizer.from_pretrained(decoder))."
            )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "encoder_input_ids", "encoder_attention_mask"]

    # Encoder side ---------------------------------------------------------------------------------------------

    def encode_memory(self, texts, max_length: int | None = None) -> BatchEncoding:
        """Encoder inputs for `texts`: `encoder_input_ids` and `encoder_attention_mask` (right-padded tensors).
        An empty (or blank) text is a `ValueError`: it has nothing to encode."""
        texts = _as_list(texts, "texts")
        _check_not_blank(texts, "texts")
        encoded = self.encoder_tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return BatchEncoding(
            {"encoder_input_ids": encoded["input_ids"], "encoder_attention_mask": encoded["attention_mask"]}
        )

    # Decoder side ---------------------------------------------------------------------------------------------

    def decoder_ids(self, texts: list[str], add_eos: bool = False, max_length: int | None = None) -> list[list[int]]:
        """Decoder token ids of each text (a list per text, unpadded): BOS first (added when the decoder tokenizer
        does not add it itself), EOS last with `add_eos=True`, truncated to `max_length` when given."""
        texts = _as_list(texts, "texts")
        tokenizer = self.decoder_tokenizer
        sequences = tokenizer(texts, add_special_tokens=True, truncation=max_length is not None, max_length=max_length)
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        result = []
        for ids in sequences["input_ids"]:
            ids = list(ids)
            if bos is not None and (not ids or ids[0] != bos):
                ids = [bos] + ids
            if add_eos and eos is not None and (not ids or ids[-1] != eos):
                ids = ids + [eos]
            result.append(ids)
        return result

    def text_ids(self, texts: list[str], template: str = "New fact: {memory}\n") -> list[list[int]]:
        """Decoder tokens (no BOS, no EOS) of each remembered text as `memory_readout="text"` places it before a
        prompt: `template` with `{memory}` replaced by the text, a full stop added to a text that ends without
        punctuation."""
        texts = _as_list(texts, "texts")
        _check_not_blank(texts, "texts")
        formatted = []
        for text in texts:
            text = text.strip()
            if text[-1] not in ".!?;:":
                text += "."
            formatted.append(template.replace("{memory}", text))
        return [list(ids) for ids in self.decoder_tokenizer(formatted, add_special_tokens=False)["input_ids"]]

    def context_ids(self, texts: list[str], template: str = "New fact: {memory}\n") -> list[list[int]]:
        """Deprecated name of [`text_ids`]."""
        warnings.warn(
            "LarimarProcessor.context_ids is deprecated; use LarimarProcessor.text_ids.", FutureWarning, stacklevel=2
        )
        return self.text_ids(texts, template)

    def memory_ids(self, texts: list[str]) -> list[list[int]]:
        """Encoder tokens of each text (unpadded), exactly as [`encode_memory`] gives them to the encoder."""
        encoded = self.encode_memory(texts)
        return [
            ids[mask.bool()].tolist()
            for ids, mask in zip(encoded["encoder_input_ids"], encoded["encoder_attention_mask"])
        ]

    def tokenizer_fingerprints(self) -> dict[str, str]:
        """A short hash of each tokenizer's vocabulary (`encoder_tokenizer`, `decoder_tokenizer`): what a memory file
        records to tell, when it is loaded, whether its tokens were made by the same tokenizers."""
        return {
            f"{name}_tokenizer": _vocabulary_hash(tokenizer)
            for name, tokenizer in (("encoder", self.encoder_tokenizer), ("decoder", self.decoder_tokenizer))
        }

    def pad_decoder_ids(self, sequences: list[list[int]], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        """`(input_ids, attention_mask)` of token id lists padded on `side` (`"left"` or `"right"`) with the decoder
        tokenizer's pad token (its EOS when it has none)."""
        if side not in ("left", "right"):
            raise ValueError(f"side={side!r} is not supported; expected 'left' or 'right'.")
        if not sequences:
            raise ValueError("sequences is empty: give at least one list of token ids.")
        tokenizer = self.decoder_tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("The decoder tokenizer has neither a pad_token nor an eos_token to pad with.")
        length = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, ids in enumerate(sequences):
            span = slice(length - len(ids), length) if side == "left" else slice(0, len(ids))
            input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, span] = 1
        return input_ids, attention_mask

    # The names these two had before they were public (kept for code that still calls them).
    _decoder_ids = decoder_ids
    _pad = pad_decoder_ids

    def __call__(
        self,
        text=None,
        queries=None,
        *,
        padding_side: str = "left",
        max_length: int | None = None,
        **kwargs,
    ) -> BatchEncoding:
        """Prompts for `generate`: the decoder's `input_ids` / `attention_mask` (left-padded, starting with BOS)
        and the memory queries' `encoder_input_ids` / `encoder_attention_mask`.

        Args:
            text (`str` or `list[str]`): The prompts.
            queries (`str` or `list[str]`, *optional*): What to read the memory with; the prompts by default.
            padding_side (`str`, *optional*, defaults to `"left"`): `"left"` for generation, `"right"` otherwise.
            max_length (`int`, *optional*): Truncate longer inputs.
        """
        if kwargs:
            raise TypeError(f"LarimarProcessor got unexpected arguments {sorted(kwargs)}.")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r} is not supported; expected 'left' or 'right'.")
        text = _as_list(text, "text")
        queries = text if queries is None else _as_list(queries, "queries")
        if len(queries) != len(text):
            raise ValueError(f"Got {len(text)} prompts but {len(queries)} queries; give one query per prompt.")
        input_ids, attention_mask = self.pad_decoder_ids(self.decoder_ids(text, False, max_length), padding_side)
        return BatchEncoding(
            {"input_ids": input_ids, "attention_mask": attention_mask, **self.encode_memory(queries, max_length)}
        )

    def episode(self, texts, prompts=None, max_length: int | None = None) -> BatchEncoding:
        """A training batch: decoder `input_ids` / `attention_mask` / `labels` (BOS + text + EOS, right-padded,
        padding labelled -100), the texts' encoder inputs, and with `prompts` their encoder inputs as
        `query_input_ids` / `query_attention_mask`."""
        texts = _as_list(texts, "texts")
        input_ids, attention_mask = self.pad_decoder_ids(self.decoder_ids(texts, True, max_length), "right")
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        batch.update(self.encode_memory(texts, max_length))
        if prompts is not None:
            prompts = _as_list(prompts, "prompts")
            if len(prompts) != len(texts):
                raise ValueError(f"Got {len(texts)} texts but {len(prompts)} prompts; give one prompt per text.")
            queries = self.encode_memory(prompts, max_length)
            batch["query_input_ids"] = queries["encoder_input_ids"]
            batch["query_attention_mask"] = queries["encoder_attention_mask"]
        return BatchEncoding(batch)

    def batch_decode(self, *args, **kwargs):
        """The decoder tokenizer's `batch_decode`."""
        return self.decoder_tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        """The decoder tokenizer's `decode`."""
        return self.decoder_tokenizer.decode(*args, **kwargs)

    def check_model(self, model) -> None:
        """Raise a `ValueError` when a tokenizer can produce token ids beyond the embeddings of its side of `model`
        (a [`LarimarModel`] or [`LarimarForCausalLM`]). Tokenizers smaller than padded embeddings are fine."""
        larimar = getattr(model, "model", model)
        pairs = (
            ("encoder", self.encoder_tokenizer, larimar.encoder),
            ("decoder", self.decoder_tokenizer, model),
        )
        for name, tokenizer, module in pairs:
            rows = embedding_rows(module)
            bound = token_id_bound(tokenizer)
            if rows is not None and bound > rows:
                source = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
                raise ValueError(
                    f"The {name} tokenizer ({source}) produces token ids up to {bound - 1} but the model's {name} "
                    f"({getattr(model.config, name).model_type}) embeds only {rows} tokens: they do not belong "
                    f"together. Build the processor with the {name}'s own tokenizer: "
                    "LarimarProcessor(encoder_tokenizer, decoder_tokenizer)."
                )


def _missing_subfolders(name_or_path, kwargs) -> list[str]:
    """The tokenizer subfolders a saved processor lacks: looked up in a local folder, or in a Hub repo through the
    cache (the files are needed anyway); an unreachable Hub or a missing folder is left for transformers to report."""
    from transformers.utils import cached_file

    subfolder = kwargs.get("subfolder") or ""
    if os.path.isdir(os.path.join(str(name_or_path), subfolder)):
        return [name for name in SUBFOLDERS if not os.path.isdir(os.path.join(str(name_or_path), subfolder, name))]
    if looks_like_local_path(name_or_path):
        return []
    options = {key: kwargs[key] for key in ("cache_dir", "token", "revision", "local_files_only") if key in kwargs}

    def found(folder: str) -> bool:
        return (
            cached_file(
                str(name_or_path),
                "tokenizer_config.json",
                subfolder=folder,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
                **options,
            )
            is not None
        )

    try:
        missing = [name for name in SUBFOLDERS if not found("/".join(part for part in (subfolder, name) if part))]
        # Nothing found at all may be an unreachable Hub: refuse only a repo that holds one tokenizer at its root.
        if len(missing) == len(SUBFOLDERS) and not found(subfolder):
            return []
    except OSError:  # no such repo, or no access: transformers says so
        return []
    return missing


def _vocabulary_hash(tokenizer) -> str:
    vocabulary = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _check_not_blank(texts: list[str], name: str) -> None:
    blank = [i for i, text in enumerate(texts) if not text.strip()]
    if blank:
        raise ValueError(
            f"{name}[{blank[0]}] is {texts[blank[0]]!r}: an empty text has nothing to encode"
            f"{f' ({len(blank)} such texts)' if len(blank) > 1 else ''}; give texts with words in them."
        )


def _as_list(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or len(texts) == 0:
        raise ValueError(f"{name} is empty: give at least one text.")
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a string or a list of strings.")
    return list(texts)
