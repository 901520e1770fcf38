"""Processor class for Larimar: the encoder's and the decoder's tokenizers in one object."""

from __future__ import annotations

import torch
from transformers import BatchEncoding, ProcessorMixin


__all__ = ["LarimarProcessor"]


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

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "encoder_input_ids", "encoder_attention_mask"]

    # Encoder side ---------------------------------------------------------------------------------------------

    def encode_memory(self, texts, max_length: int | None = None) -> BatchEncoding:
        """Encoder inputs for `texts`: `encoder_input_ids` and `encoder_attention_mask` (right-padded tensors)."""
        texts = _as_list(texts, "texts")
        encoded = self.encoder_tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return BatchEncoding(
            {"encoder_input_ids": encoded["input_ids"], "encoder_attention_mask": encoded["attention_mask"]}
        )

    # Decoder side ---------------------------------------------------------------------------------------------

    def _decoder_ids(self, texts: list[str], add_eos: bool, max_length: int | None) -> list[list[int]]:
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

    def _pad(self, sequences: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
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
        input_ids, attention_mask = self._pad(self._decoder_ids(text, False, max_length), padding_side)
        return BatchEncoding(
            {"input_ids": input_ids, "attention_mask": attention_mask, **self.encode_memory(queries, max_length)}
        )

    def episode(self, texts, prompts=None, max_length: int | None = None) -> BatchEncoding:
        """A training batch: decoder `input_ids` / `attention_mask` / `labels` (BOS + text + EOS, right-padded,
        padding labelled -100), the texts' encoder inputs, and with `prompts` their encoder inputs as
        `query_input_ids` / `query_attention_mask`."""
        texts = _as_list(texts, "texts")
        input_ids, attention_mask = self._pad(self._decoder_ids(texts, True, max_length), "right")
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
        """Raise a `ValueError` when the tokenizers' vocabularies do not fit the model's embeddings."""
        pairs = (
            ("encoder", self.encoder_tokenizer, model.config.encoder),
            ("decoder", self.decoder_tokenizer, model.config.decoder),
        )
        for name, tokenizer, config in pairs:
            if len(tokenizer) > config.vocab_size:
                raise ValueError(
                    f"The {name} tokenizer has {len(tokenizer)} tokens but the model's {name} embeds only "
                    f"{config.vocab_size}: they do not belong together."
                )


def _as_list(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or len(texts) == 0:
        raise ValueError(f"{name} is empty: give at least one text.")
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a string or a list of strings.")
    return list(texts)
