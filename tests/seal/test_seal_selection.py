import json
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict, IterableDataset, load_dataset
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, RepoUrl

from hf_ext.seal import SEALScores, add_seal_scores, seal_filter
from hf_ext.seal.data import content_hash, detect_format


def _rows(n=10):
    return [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(n)
    ]


def _scores_for(rows, values, **kwargs):
    return SEALScores([content_hash(r, ("messages",)) for r in rows], values, **kwargs)


@pytest.fixture
def scored():
    rows = _rows(10)
    values = [0.5, -1.0, 2.0, 0.0, 0.5, 3.0, -2.0, 1.0, 0.25, -0.5]
    return Dataset.from_list(rows), _scores_for(rows, values, metadata={"safe_dataset_name": "org/safe"}), values


def _expected_kept(values, k):
    # Independent oracle: sort (score desc, position asc), take k, restore original order.
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
    return sorted(order)


def test_content_hash_ignores_key_order_and_none_fields():
    a = {"messages": [{"role": "user", "content": "hi"}], "other": 1}
    b = {"messages": [{"content": "hi", "role": "user", "tool_calls": None}], "other": 2}
    assert content_hash(a, ("messages",)) == content_hash(b, ("messages",))
    assert content_hash(a, ("messages",)) != content_hash(
        {"messages": [{"role": "user", "content": "hi!"}]}, ("messages",)
    )
    assert detect_format(["prompt", "completion", "x"]) == "prompt_completion"
    with pytest.raises(ValueError, match="'messages' column, 'prompt' and 'completion'"):
        detect_format(["question", "answer"])


@pytest.mark.parametrize("keep_ratio", [0.8, 0.35, 1.0, 0.1])  # keeping no row is an error (test_seal_inputs)
def test_filter_keeps_the_top_floor_p_n_rows_in_order(scored, keep_ratio):
    dataset, scores, values = scored
    kept = seal_filter(dataset, scores, keep_ratio)
    k = math.floor(keep_ratio * 10 + 1e-9)
    assert len(kept) == k
    assert kept["messages"] == [dataset[i]["messages"] for i in _expected_kept(values, k)]


def test_ties_go_to_the_earlier_row(scored):
    dataset, scores, _ = scored
    # Scores 0.5 at rows 0 and 4 tie for the 4th and 5th places; with k = 4 row 0 wins.
    kept = seal_filter(dataset, scores, 0.4)
    assert [m[0]["content"] for m in kept["messages"]] == ["question 0", "question 2", "question 5", "question 7"]


def test_scores_follow_rows_through_shuffle_and_filter(scored):
    dataset, scores, values = scored
    shuffled = dataset.shuffle(seed=3).filter(lambda ex: ex["messages"][0]["content"] != "question 5")
    annotated = add_seal_scores(shuffled, scores)
    for row in annotated:
        i = int(row["messages"][0]["content"].split()[-1])
        assert row["seal_score"] == pytest.approx(values[i])
        assert row["seal_rank"] == sorted(range(10), key=lambda j: (-values[j], j)).index(i)
    # Filtering the shuffled subset keeps floor(p * 9) of its rows, the best of them, in the shuffled order.
    kept = seal_filter(shuffled, scores, 0.5)
    subset_values = [values[int(r["messages"][0]["content"].split()[-1])] for r in shuffled]
    assert kept["messages"] == [shuffled[i]["messages"] for i in _expected_kept(subset_values, 4)]


def test_dataset_dict_and_iterable_dataset(scored):
    dataset, scores, values = scored
    splits = DatasetDict({"train": dataset.select(range(6)), "test": dataset.select(range(6, 10))})
    kept = seal_filter(splits, scores, 0.5)
    assert len(kept["train"]) == 3 and len(kept["test"]) == 2
    assert kept["test"]["messages"] == [dataset[6 + i]["messages"] for i in _expected_kept(values[6:], 2)]

    stream = dataset.to_iterable_dataset(num_shards=2)
    assert isinstance(stream, IterableDataset)
    streamed = list(seal_filter(stream, scores, 0.8))
    assert sorted(r["messages"][0]["content"] for r in streamed) == sorted(
        r["messages"][0]["content"] for r in seal_filter(dataset, scores, 0.8)
    )
    annotated = list(add_seal_scores(dataset.to_iterable_dataset(), scores))
    assert [r["seal_score"] for r in annotated] == pytest.approx(values)


def test_rerun_hits_the_datasets_cache(scored, tmp_path, monkeypatch):
    dataset, scores, values = scored
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in dataset.to_list()))
    cached = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    first = seal_filter(cached, scores, 0.8)
    assert first.cache_files, "the result should live in a cache file"

    import hf_ext.seal.filtering as selection

    calls = []
    original = selection.hash_batch
    monkeypatch.setattr(selection, "hash_batch", lambda *a: calls.append(1) or original(*a))
    second = seal_filter(cached, scores, 0.8)
    assert calls == [], "a re-run must load from the cache, not recompute"
    assert second._fingerprint == first._fingerprint and second.to_list() == first.to_list()
    # Other scores or another ratio give another fingerprint.
    other = _scores_for(dataset.to_list(), [-v for v in values])
    assert seal_filter(cached, other, 0.8)._fingerprint != first._fingerprint
    assert seal_filter(cached, scores, 0.7)._fingerprint != first._fingerprint


def test_bad_input_is_rejected_before_filtering(scored):
    dataset, scores, _ = scored
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"keep_ratio={bad}"):
            seal_filter(dataset, scores, bad)
    with pytest.raises(ValueError, match=r"no \['messages'\] column"):
        seal_filter(Dataset.from_dict({"text": ["a", "b"]}), scores)
    other = Dataset.from_list(_rows(20)[10:])
    with pytest.raises(ValueError, match="computed on another dataset"):
        seal_filter(other, scores)
    with pytest.raises(ValueError, match="computed on another dataset"):
        seal_filter(other.to_iterable_dataset(), scores)
    mixed = Dataset.from_list(_rows(12))
    with pytest.raises(ValueError, match="2 of 12 rows have no SEAL score"):
        seal_filter(mixed, scores)
    kept = seal_filter(mixed, scores, 0.5, allow_missing=True)
    assert len(kept) == 5 and all(int(m[0]["content"].split()[-1]) < 10 for m in kept["messages"])
    with pytest.raises(ValueError, match="2 of 12 rows have no SEAL score"):
        add_seal_scores(mixed, scores)
    assert math.isnan(add_seal_scores(mixed, scores, allow_missing=True)[11]["seal_score"])


def test_scores_validate_their_input():
    with pytest.raises(ValueError, match="2 hashes but 3 scores"):
        SEALScores(["a" * 32, "b" * 32], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="all be different"):
        SEALScores(["a" * 32, "a" * 32], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        SEALScores(["a" * 32], [float("nan")])


def test_save_load_round_trip_and_card(scored, tmp_path):
    _, scores, values = scored
    folder = scores.save_pretrained(tmp_path / "scores")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "seal_scores.json", "seal_scores.safetensors"]
    loaded = SEALScores.from_pretrained(folder)
    assert loaded.hashes == scores.hashes and torch.equal(loaded.scores, scores.scores)
    assert loaded.metadata == scores.metadata and loaded.digest() == scores.digest()

    card = scores.dataset_card(0.8, kept=8, dropped=2, source_dataset="org/raw")
    assert isinstance(card, DatasetCard)
    text = str(card)
    assert "Safe reference set: org/safe" in text and "Keep ratio p: 0.8" in text
    assert "| all | 8 | 2 |" in text and card.data.to_dict()["source_datasets"] == ["org/raw"]
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 10
    assert sum(int(r.split("|")[3]) for r in rows) == 8 and sum(int(r.split("|")[4]) for r in rows) == 2


def test_push_to_hub_sends_scores_and_card(scored, monkeypatch):
    _, scores, _ = scored
    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}"))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            assert isinstance(op, CommitOperationAdd)
            files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
        commits.append({"repo_id": repo_id, "files": files, **kwargs})

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    scores.push_to_hub("me/seal-scores")
    (commit,) = commits
    assert commit["repo_id"] == "me/seal-scores" and commit["repo_type"] == "dataset"
    assert sorted(commit["files"]) == ["README.md", "seal_scores.json", "seal_scores.safetensors"]
    assert json.loads(commit["files"]["seal_scores.json"])["hash_fields"] == ["messages"]
