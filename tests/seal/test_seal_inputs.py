"""Bad input to SEAL is a clear error before any work (or a documented behaviour with a warning): a keep ratio that
keeps no row, duplicate rows, missing values, and a tokenizer that does not fit the model."""

import re
import warnings

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ext.seal import SEALConfig, SEALScores, SEALTrainer, add_seal_scores, seal_filter
from hf_ext.seal.baselines import loss_scores
from hf_ext.seal.data import hash_batch


TEXTS = [f"the cat number {i} sat on the mat" for i in range(8)]


def scores_for(dataset):
    hashes = hash_batch({"text": list(dataset["text"])}, ("text",))
    return SEALScores(hashes, torch.arange(len(hashes), dtype=torch.float32), hash_fields=("text",))


def make_args(tmp_path, **kwargs):
    return SEALConfig(str(tmp_path / "out"), report_to="none", use_cpu=True, disable_tqdm=True, **kwargs)


@pytest.mark.parametrize("kind", ["dataset", "iterable", "dataset-dict"])
def test_a_keep_ratio_that_keeps_no_row_is_refused_and_one_row_is_the_least(kind):
    dataset = Dataset.from_dict({"text": TEXTS})
    scores = scores_for(dataset)
    data = {
        "dataset": dataset,
        "iterable": dataset.to_iterable_dataset(),
        "dataset-dict": DatasetDict({"train": dataset}),
    }[kind]
    prefix = "split 'train': " if kind == "dataset-dict" else ""
    with pytest.raises(
        ValueError, match=rf"^{prefix}keep_ratio=0.001 keeps floor\(0.001 x 8\) = 0 of the 8 .*>= 1/8 = 0.125"
    ):
        seal_filter(data, scores, keep_ratio=0.001)
    kept = seal_filter(data, scores, keep_ratio=1 / 8)  # the smallest ratio that keeps a row keeps exactly one
    kept = kept["train"] if kind == "dataset-dict" else kept
    assert [row["text"] for row in kept] == [TEXTS[-1]]  # the best score


def test_duplicate_rows_are_scored_once_with_a_warning_that_counts_them(tiny_llama_path, tmp_path):
    train = Dataset.from_dict({"text": ["the same row"] * 8 + TEXTS[:2]})
    safe = Dataset.from_dict({"text": TEXTS[2:4]})
    with pytest.warns(UserWarning, match=r"has 10 rows but 3 distinct examples: 7 duplicate row\(s\) were merged"):
        trainer = SEALTrainer(str(tiny_llama_path), args=make_args(tmp_path), train_dataset=train, safe_dataset=safe)
    scores = trainer.scores()
    assert len(scores) == 3
    scored = add_seal_scores(train, scores)
    assert len(set(scored["seal_score"][:8])) == 1 and set(scored["seal_rank"][:8]) == {scores.rank(scores.hashes[0])}
    # Distinct rows: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SEALTrainer(str(tiny_llama_path), args=make_args(tmp_path), train_dataset=safe, safe_dataset=safe)


@pytest.mark.parametrize(
    ("train", "safe", "match"),
    [
        (
            {"text": ["a", None, "c"]},
            {"text": ["x"]},
            r"train_dataset column 'text' has a missing value \(None\) at row 1",
        ),
        (
            {"prompt": ["p", "q"], "completion": [" a", None]},
            {"text": ["x"]},
            r"train_dataset column 'completion' has a missing value \(None\) at row 1",
        ),
        (
            {"text": ["a"]},
            {"text": ["x", "y", None]},
            r"safe_dataset column 'text' has a missing value \(None\) at row 2",
        ),
    ],
)
def test_missing_values_are_named_before_the_model_is_loaded(train, safe, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        _trainer_on(train, safe, tmp_path)


def _trainer_on(train: dict, safe: dict, tmp_path):
    """A SEALTrainer on these columns, named by a model that does not exist: the data must be refused first."""
    return SEALTrainer(
        "not-loaded/because-the-data-is-checked-first",
        args=make_args(tmp_path),
        train_dataset=Dataset.from_dict(train),
        safe_dataset=Dataset.from_dict(safe),
    )


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused_by_the_ranker_and_the_loss_filter(
    tiny_llama_path, tmp_path
):
    larger = AutoTokenizer.from_pretrained(tiny_llama_path)
    larger.add_tokens([f"<extra_{i}>" for i in range(40)])
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    data = Dataset.from_dict({"text": TEXTS})
    match = r"produces token ids up to 1063, but the model .* embeds only 1024 tokens"
    with pytest.raises(ValueError, match=match):
        SEALTrainer(model, args=make_args(tmp_path), train_dataset=data, safe_dataset=data, processing_class=larger)
    with pytest.raises(ValueError, match=match.replace("processing_class", "tokenizer")):
        loss_scores(model, larger, list(data), data_format="text")
    # A tokenizer within padded embeddings is fine.
    model.resize_token_embeddings(len(larger), pad_to_multiple_of=64)
    assert loss_scores(model, larger, list(data)[:2], data_format="text").shape == (2,)


def chat(*turns):
    return [{"role": role, "content": content} for role, content in zip(("user", "assistant") * 3, turns)]


@pytest.mark.parametrize(
    ("train", "safe", "match"),
    [
        (
            {"text": ["a", "", "c", "   \n"]},
            {"text": ["x"]},
            r"^train_dataset column 'text' holds an empty text \('' or whitespace only\) at rows 1, 3 \(2 of 4 rows\)"
            r": there is nothing there to learn or score\. .*train_dataset\.filter\(lambda example: "
            r"example\['text'\]\.strip\(\) != ''\)",
        ),
        (
            {"prompt": ["p", "q"], "completion": [" a", " "]},
            {"text": ["x"]},
            r"^train_dataset column 'completion' holds an empty text \('' or whitespace only\) at row 1:",
        ),
        (
            {"messages": [chat("hi", "hello"), chat("hi", "  ")]},
            {"text": ["x"]},
            r"^train_dataset column 'messages' holds an empty text \(its last message has no text\) at row 1:",
        ),
        (
            {"text": ["a"]},
            {"text": ["x", ""]},
            r"^safe_dataset column 'text' holds an empty text \('' or whitespace only\) at row 1:",
        ),
    ],
)
def test_empty_texts_are_named_by_row_before_the_model_is_loaded(train, safe, match, tmp_path):
    """Issue 29: an empty text (or completion, or answer) was tokenized to its special tokens and scored silently."""
    with pytest.raises(ValueError, match=match):
        _trainer_on(train, safe, tmp_path)


@pytest.mark.parametrize("where", ["train_dataset", "safe_dataset"])
def test_a_chat_message_without_content_is_named_by_row_and_message(where, tmp_path):
    """Issue 29: a message with `content: None` failed deep in the chat template ("'dict object' has no attribute
    'content'"), naming no row."""
    messages = [chat("hi", "hello"), chat("hi", "hello"), chat("hi", "hello", None, "ok")]
    data = Dataset.from_dict({"messages": messages})
    fine = Dataset.from_dict({"messages": messages[:2]})
    train, safe = (data, fine) if where == "train_dataset" else (fine, data)
    with pytest.raises(
        ValueError,
        match=rf"^{where} column 'messages', row 2, message 2 \(role 'user'\) has content None; expected a string "
        r"\(or a list of parts\)\. A chat template cannot render it; fill it in or drop the row first\.$",
    ):
        SEALTrainer("not-loaded/because-the-data-is-checked-first", args=make_args(tmp_path), train_dataset=train,
                    safe_dataset=safe)  # fmt: skip


def test_the_loss_filter_refuses_empty_texts_and_messages_without_content(tiny_llama_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    with pytest.raises(ValueError, match=r"^rows column 'text' holds an empty text .* at row 1:"):
        loss_scores(model, tokenizer, [{"text": "a"}, {"text": ""}], data_format="text")
    with pytest.raises(
        ValueError, match=r"^rows column 'messages', row 0, message 1 \(role 'assistant'\) has content"
    ):
        loss_scores(model, tokenizer, [{"messages": chat("hi", None)}], data_format="messages")


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("no columns", r"^The dataset is empty \(0 rows, no columns\): there is no row to {}\. Expected the rows the "
         r"scores were computed on \(fields \['text'\]\)"),
        ("columns", r"^The dataset is empty \(0 rows\): there is no row to {}\."),
        ("empty split", r"^split 'test': The dataset is empty \(0 rows\): there is no row to {}\."),
        ("empty stream", r"^The dataset is an empty stream: there is no example to {}\."),
    ],
)  # fmt: skip
@pytest.mark.parametrize("function", [seal_filter, add_seal_scores])
def test_an_empty_dataset_is_said_to_be_empty_not_to_lack_a_column(kind, match, function):
    """Issue 29: `seal_filter` on an empty dataset said "The dataset has no ['text'] column(s)" (no columns) or
    "Column 'seal_hash' doesn't exist"."""
    from datasets import IterableDataset

    scores = scores_for(Dataset.from_dict({"text": TEXTS}))
    data = {
        "no columns": Dataset.from_list([]),
        "columns": Dataset.from_dict({"text": []}),
        "empty split": DatasetDict(
            {"train": Dataset.from_dict({"text": TEXTS}), "test": Dataset.from_dict({"text": []})}
        ),
        "empty stream": IterableDataset.from_generator(lambda: iter([])),
    }[kind]
    with pytest.raises(ValueError, match=match.format("filter" if function is seal_filter else "score")):
        function(data, scores)


def test_seal_filter_command_names_an_empty_data_file(tmp_path, capsys):
    from hf_ext.cli import main

    scores_for(Dataset.from_dict({"text": TEXTS})).save_pretrained(tmp_path / "scores")
    (tmp_path / "data.jsonl").write_text("\n")
    argv = ["seal-filter", "--scores", str(tmp_path / "scores"), "--dataset_name", str(tmp_path / "data.jsonl"),
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"hf-ext seal-filter: error: dataset_name='{tmp_path / 'data.jsonl'}': the file " in err
    assert "is empty; expected rows of data." in err and not (tmp_path / "out").exists()


def test_a_checkpoint_lacking_weights_its_config_needs_is_refused(tiny_llama_path, tmp_path):
    """Issue 29: weights the config needs and the checkpoint lacks started at random, silently."""
    import json
    import shutil

    folder = shutil.copytree(tiny_llama_path, tmp_path / "grown")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    data = Dataset.from_dict({"text": TEXTS})
    with pytest.raises(ValueError, match=rf"^The checkpoint '{re.escape(str(folder))}' lacks 9 weight\(s\) that "):
        SEALTrainer(str(folder), args=make_args(tmp_path), train_dataset=data, safe_dataset=data)
