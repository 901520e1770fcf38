"""Examples as SEAL sees them: their format, their content hash, and their tokens with the prompt masked.

Three dataset formats are understood, as in TRL:

- conversational: a `messages` column (a list of `{"role", "content"}` dicts); the assistant turns are learned;
- prompt-completion: `prompt` and `completion` columns (strings, or lists of messages); the completion is learned;
- language modelling: a `text` column; every token is learned.

An example's identity is a hash of exactly those fields (keys whose value is `None`, which Arrow adds when it
unifies message schemas, are ignored), so scores follow an example through shuffling, filtering and streaming.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence


__all__ = [
    "FORMATS",
    "HASH_BYTES",
    "content_hash",
    "detect_format",
    "format_fields",
    "hash_batch",
    "tokenize_example",
]

FORMATS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
"""The dataset formats SEAL reads, in order of preference, and the fields each one uses."""

HASH_BYTES = 16
"""Length of a content hash in bytes (the hex string is twice as long)."""


def detect_format(column_names: Iterable[str] | None) -> str:
    """The first format of [`FORMATS`] whose fields are all among `column_names`; raises `ValueError` if none is."""
    columns = set(column_names or ())
    for name, fields in FORMATS.items():
        if set(fields) <= columns:
            return name
    raise ValueError(
        f"The dataset has columns {sorted(columns)}, but SEAL needs a 'messages' column, 'prompt' and 'completion' "
        "columns, or a 'text' column."
    )


def format_fields(data_format: str) -> tuple[str, ...]:
    """The fields of a format name of [`FORMATS`]."""
    try:
        return FORMATS[data_format]
    except KeyError:
        raise ValueError(f"data_format={data_format!r} is not supported; expected one of {list(FORMATS)}.") from None


def _canonical(value):
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def content_hash(example: Mapping, fields: Sequence[str]) -> str:
    """A hex digest of an example's `fields` (canonical JSON: sorted keys, `None` values dropped)."""
    try:
        payload = {field: _canonical(example[field]) for field in fields}
    except KeyError as error:
        raise ValueError(
            f"The example has no field {error.args[0]!r}; SEAL hashes the fields {list(fields)}."
        ) from None
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=HASH_BYTES).hexdigest()


def hash_batch(batch: Mapping[str, list], fields: Sequence[str]) -> list[str]:
    """[`content_hash`] of every example of a batch in `datasets`' column layout (`{field: [values]}`)."""
    size = len(batch[fields[0]])
    return [content_hash({field: batch[field][i] for field in fields}, fields) for i in range(size)]


def _uses_generation_markers(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "{% generation %}" in template or "{%- generation %}" in template or "generation -%}" in template


def _chat_ids(tokenizer, messages, **kwargs) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def tokenize_example(example: Mapping, tokenizer, data_format: str, max_length: int | None = None) -> dict:
    """Tokens of one example and its `completion_mask` (1 on the tokens to learn, 0 on the prompt).

    Conversational examples go through the tokenizer's chat template: with a template that marks assistant turns
    with `{% generation %}`, its assistant-token mask is used (every assistant turn is learned); otherwise the
    tokens of the conversation before its last assistant turn are masked. Prompt-completion examples mask the
    prompt's tokens (through the chat template when they are conversational); plain text is learned whole. An
    end-of-sequence token closes non-conversational completions. Sequences longer than `max_length` are cut on the
    right.
    """
    if data_format == "messages":
        messages = list(example["messages"])
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("A conversational example must end with an assistant message.")
        if _uses_generation_markers(tokenizer):
            out = tokenizer.apply_chat_template(
                messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            input_ids, mask = list(out["input_ids"]), [int(m) for m in out["assistant_masks"]]
        else:
            input_ids = _chat_ids(tokenizer, messages)
            prompt_ids = _chat_ids(tokenizer, messages[:-1], add_generation_prompt=True)
            mask = [0] * len(prompt_ids) + [1] * (len(input_ids) - len(prompt_ids))
    elif data_format == "prompt_completion":
        prompt, completion = example["prompt"], example["completion"]
        if isinstance(prompt, str) != isinstance(completion, str):
            raise ValueError("'prompt' and 'completion' must both be strings or both be lists of messages.")
        if isinstance(prompt, str):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
            if tokenizer.eos_token_id is not None:
                completion_ids = completion_ids + [tokenizer.eos_token_id]
            input_ids = list(prompt_ids) + list(completion_ids)
            mask = [0] * len(prompt_ids) + [1] * len(completion_ids)
        else:
            prompt_ids = _chat_ids(tokenizer, list(prompt), add_generation_prompt=True)
            input_ids = _chat_ids(tokenizer, list(prompt) + list(completion))
            mask = [0] * len(prompt_ids) + [1] * (len(input_ids) - len(prompt_ids))
    elif data_format == "text":
        input_ids = list(tokenizer(example["text"], add_special_tokens=False)["input_ids"])
        if tokenizer.bos_token_id is not None:
            input_ids = [tokenizer.bos_token_id] + input_ids
        if tokenizer.eos_token_id is not None:
            input_ids = input_ids + [tokenizer.eos_token_id]
        mask = [1] * len(input_ids)
    else:
        format_fields(data_format)  # raises for an unknown format
        raise AssertionError("unreachable")
    if max_length is not None:
        input_ids, mask = input_ids[:max_length], mask[:max_length]
    return {"input_ids": input_ids, "completion_mask": mask}
