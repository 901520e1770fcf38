"""Bad input to SEAL is a clear error before any work (or a documented behaviour with a warning): a keep ratio that
keeps no row, duplicate rows, missing values, and a tokenizer that does not fit the model."""

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
        SEALTrainer(
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
