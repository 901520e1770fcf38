"""SEAL scores as a `datasets` citizen: [`SEALScores`], [`add_seal_scores`] and [`seal_filter`].

Scores are keyed by a content hash of each example (see `hf_ext.seal.data`), never by its position, so they stay
on the right rows after shuffling, filtering, sharding or streaming. The functions take and return `datasets`
objects (`Dataset`, `DatasetDict`, `IterableDataset`, `IterableDatasetDict`) and pass an explicit fingerprint
derived from the scores, so a re-run over a cached dataset loads its result from the `datasets` cache.

```python
>>> from hf_ext.seal import SEALScores, seal_filter
>>> scores = SEALScores.from_pretrained("me/my-seal-scores")
>>> kept = seal_filter(dataset, scores, keep_ratio=0.8)   # the top floor(0.8 * N) rows, in their original order
```
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .._validation import check_range
from ..hub import HubMixin, make_card
from ..serialization import load_json, load_tensors, save_json, save_tensors
from .data import FORMATS, HASH_BYTES, hash_batch
from .ranking import top_k_mask


__all__ = ["SEALScores", "add_seal_scores", "seal_filter"]

SCORES_FILE = "seal_scores.safetensors"
CONFIG_FILE = "seal_scores.json"
_FORMAT_VERSION = 1


class SEALScores(HubMixin):
    """One score per fine-tuning example (higher: safer to keep), keyed by the example's content hash.

    Made by [`SEALTrainer.scores`]; saved as safetensors + JSON with a dataset card (`save_pretrained`), loaded with
    `from_pretrained` (a folder or a Hub dataset repo) and shared with `push_to_hub`.

    Args:
        hashes (`Sequence[str]`): The examples' content hashes (hex), all different.
        scores (`torch.Tensor` or sequence of floats): Their scores, in the same order.
        hash_fields (`Sequence[str]`, *optional*, defaults to `("messages",)`):
            The dataset fields the hashes were computed from.
        metadata (`dict`, *optional*): Provenance (base model, safe set, configuration), kept in the JSON file.
    """

    hub_files = [SCORES_FILE, CONFIG_FILE, "README.md"]
    hub_repo_type = "dataset"

    def __init__(
        self,
        hashes: Sequence[str],
        scores,
        *,
        hash_fields: Sequence[str] = ("messages",),
        metadata: dict[str, Any] | None = None,
    ):
        self.hashes = [str(h) for h in hashes]
        self.scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu().flatten().clone()
        if len(self.hashes) != self.scores.numel():
            raise ValueError(f"Got {len(self.hashes)} hashes but {self.scores.numel()} scores; they must match.")
        if len(self.hashes) == 0:
            raise ValueError("SEALScores needs at least one scored example.")
        if not torch.isfinite(self.scores).all():
            raise ValueError("Every score must be finite.")
        self.hash_fields = tuple(hash_fields)
        if self.hash_fields not in FORMATS.values():
            raise ValueError(
                f"hash_fields={list(self.hash_fields)} is not one of {[list(f) for f in FORMATS.values()]}."
            )
        self.metadata = dict(metadata or {})
        self._index = {h: i for i, h in enumerate(self.hashes)}
        if len(self._index) != len(self.hashes):
            raise ValueError("The hashes must all be different (one score per distinct example).")
        order = torch.sort(-self.scores.double(), stable=True).indices
        self.ranks = torch.empty(len(self.hashes), dtype=torch.long)
        self.ranks[order] = torch.arange(len(self.hashes))

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, content_hash: str) -> bool:
        return content_hash in self._index

    def __getitem__(self, content_hash: str) -> float:
        return float(self.scores[self._index[content_hash]])

    def __repr__(self) -> str:
        return f"SEALScores(num_examples={len(self)}, hash_fields={list(self.hash_fields)})"

    def get(self, content_hash: str, default: float | None = None) -> float | None:
        """The score of an example's hash, or `default`."""
        i = self._index.get(content_hash)
        return default if i is None else float(self.scores[i])

    def rank(self, content_hash: str) -> int:
        """0 for the best-scored example, 1 for the next, ...; ties go to the example scored first."""
        return int(self.ranks[self._index[content_hash]])

    def num_kept(self, keep_ratio: float) -> int:
        """floor(keep_ratio · number of scored examples)."""
        _check_keep_ratio(keep_ratio)
        return math.floor(keep_ratio * len(self) + 1e-9)

    def kept_hashes(self, keep_ratio: float) -> set[str]:
        """The hashes of the top floor(keep_ratio · N) scored examples; a `keep_ratio` that keeps none is an error."""
        k = self.num_kept(keep_ratio)
        _check_keeps_some(keep_ratio, k, len(self), "scored examples")
        return {h for h, r in zip(self.hashes, self.ranks.tolist()) if r < k}

    def digest(self) -> str:
        """A fingerprint of the scores (hashes, values and fields), used in the datasets fingerprints."""
        h = hashlib.sha256()
        h.update(json.dumps(list(self.hash_fields)).encode())
        h.update("".join(self.hashes).encode())
        h.update(self.scores.numpy().tobytes())
        return h.hexdigest()[:16]

    # -- files -----------------------------------------------------------------------------------------------------

    def _save_files(self, save_directory: Path) -> None:
        hashes = torch.tensor([list(bytes.fromhex(h)) for h in self.hashes], dtype=torch.uint8)
        save_tensors(save_directory / SCORES_FILE, {"scores": self.scores, "hashes": hashes})
        save_json(
            save_directory / CONFIG_FILE,
            {
                "format_version": _FORMAT_VERSION,
                "hash_fields": list(self.hash_fields),
                "hash_bytes": HASH_BYTES,
                "num_examples": len(self),
                "metadata": self.metadata,
            },
        )

    @classmethod
    def _load_files(cls, folder: Path, **kwargs) -> SEALScores:
        config = load_json(folder / CONFIG_FILE)
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{folder / CONFIG_FILE} has format_version={config.get('format_version')!r}; expected 1."
            )
        tensors = load_tensors(folder / SCORES_FILE)
        hashes = [bytes(row).hex() for row in tensors["hashes"].tolist()]
        return cls(hashes, tensors["scores"], hash_fields=config["hash_fields"], metadata=config.get("metadata"))

    def model_card(self):
        return self.dataset_card(self.metadata.get("keep_ratio", 0.8))

    def dataset_card(
        self,
        keep_ratio: float,
        *,
        kept: int | Mapping[str, int] | None = None,
        dropped: int | Mapping[str, int] | None = None,
        source_dataset: str | None = None,
        bins: int = 10,
    ):
        """A `DatasetCard` for a SEAL-filtered dataset: method, safe set, p, kept / dropped counts and a score
        histogram.

        Args:
            keep_ratio (`float`): The fraction p kept.
            kept, dropped (`int` or `dict[str, int]`, *optional*):
                Rows kept and dropped (per split for a `DatasetDict`); by default those of the scored set.
            source_dataset (`str`, *optional*): The filtered dataset's name, for the card's metadata.
            bins (`int`, *optional*, defaults to 10): Bins of the histogram.
        """
        k = self.num_kept(keep_ratio)
        kept = k if kept is None else kept
        dropped = len(self) - k if dropped is None else dropped
        counts = _count_rows(kept, dropped)
        safe_set = self.metadata.get("safe_dataset_name") or "not recorded"
        histogram = _histogram_rows(self.scores, self.ranks < k, bins)
        config = {
            "keep_ratio": keep_ratio,
            "kept": kept,
            "dropped": dropped,
            "safe_dataset": safe_set,
            "num_scored": len(self),
            **{key: value for key, value in self.metadata.items() if key not in ("keep_ratio",)},
        }
        return make_card(
            "seal",
            method="seal",
            repo_type="dataset",
            datasets=source_dataset,
            tags=["data-selection", "safety"],
            method_config=config,
            title=f"SEAL-filtered {source_dataset}" if source_dataset else "SEAL-filtered dataset",
            summary=(
                "The rows of this dataset were kept by SEAL (Shen et al., ICLR 2025), a bilevel data ranker that scores "
                "each fine-tuning example by how little it pulls an aligned model away from a safe reference set."
            ),
            keep_ratio=keep_ratio,
            safe_dataset=safe_set,
            counts=counts,
            histogram=histogram,
            num_scored=len(self),
            threshold=_threshold(self.scores, self.ranks, k),
        )


def _count_rows(kept, dropped) -> list[dict]:
    if isinstance(kept, Mapping):
        return [{"split": s, "kept": int(kept[s]), "dropped": int(dropped[s])} for s in kept]
    return [{"split": "all", "kept": int(kept), "dropped": int(dropped)}]


def _threshold(scores: torch.Tensor, ranks: torch.Tensor, k: int) -> str:
    if k == 0:
        return "none kept"
    return f"{float(scores[ranks == k - 1][0]):.4g}"


def _histogram_rows(scores: torch.Tensor, kept_mask: torch.Tensor, bins: int) -> list[dict]:
    low, high = float(scores.min()), float(scores.max())
    if high == low:
        high = low + 1.0
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    which = torch.clamp(torch.bucketize(scores.double(), edges[1:-1], right=True), 0, bins - 1)
    rows = []
    peak = max(1, int(torch.bincount(which, minlength=bins).max()))
    for b in range(bins):
        in_bin = which == b
        n_kept, n_dropped = int((in_bin & kept_mask).sum()), int((in_bin & ~kept_mask).sum())
        bar = "#" * round(20 * (n_kept + n_dropped) / peak)
        rows.append(
            {
                "low": f"{float(edges[b]):.4g}",
                "high": f"{float(edges[b + 1]):.4g}",
                "kept": n_kept,
                "dropped": n_dropped,
                "bar": bar,
            }
        )
    return rows


# -- datasets API ---------------------------------------------------------------------------------------------------


def _check_keep_ratio(keep_ratio: float) -> None:
    check_range("keep_ratio", keep_ratio, gt=0, le=1)


def _check_keeps_some(keep_ratio: float, kept: int, total: int, what: str = "rows") -> None:
    """A filter that keeps nothing is an error, as `datasets`' `train_test_split` refuses an empty split."""
    if kept == 0 and total > 0:
        raise ValueError(
            f"keep_ratio={keep_ratio} keeps floor({keep_ratio} x {total}) = 0 of the {total} {what}; expected "
            f"keep_ratio >= 1/{total} = {1 / total:.4g} to keep at least one."
        )


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _check_not_empty(dataset, scores: SEALScores, what: str) -> None:
    """An empty `Dataset` has nothing to `what` (and often no columns either, which would read as a missing field)."""
    if not _is_iterable(dataset) and len(dataset) == 0:
        columns = "" if dataset.column_names else ", no columns"
        raise ValueError(
            f"The dataset is empty (0 rows{columns}): there is no row to {what}. Expected the rows the scores were "
            f"computed on (fields {list(scores.hash_fields)}); check the file, split or filter that produced it."
        )


def _check_fields(column_names, scores: SEALScores) -> None:
    if column_names is None:
        return
    missing = [f for f in scores.hash_fields if f not in column_names]
    if missing:
        raise ValueError(
            f"The dataset has no {missing} column(s); these scores were computed on the fields "
            f"{list(scores.hash_fields)} (columns present: {sorted(column_names)})."
        )


def _is_dict(dataset) -> bool:
    from datasets import DatasetDict, IterableDatasetDict

    return isinstance(dataset, (DatasetDict, IterableDatasetDict))


def _is_iterable(dataset) -> bool:
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def _no_match_error(scores: SEALScores) -> ValueError:
    return ValueError(
        f"No row of the dataset matches any of the {len(scores)} scored examples (content hashes of "
        f"{list(scores.hash_fields)}): these scores were computed on another dataset."
    )


def _row_hashes(dataset, scores: SEALScores, num_proc: int | None) -> list[str]:
    fields = scores.hash_fields
    hashed = dataset.map(
        lambda *columns: {"seal_hash": hash_batch(dict(zip(fields, columns)), fields)},
        input_columns=list(fields),
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        new_fingerprint=_fingerprint(dataset._fingerprint, "seal_hash", fields),
        desc="SEAL: hashing examples",
    )
    return hashed["seal_hash"]


def _peek_check(dataset, scores: SEALScores, what: str) -> None:
    """Check the first example of a stream, so that an empty stream or scores from another dataset fail before any
    filtering."""
    first = next(iter(dataset.take(1)), None)
    if first is None:
        raise ValueError(
            f"The dataset is an empty stream: there is no example to {what}. Expected the examples the scores were "
            f"computed on (fields {list(scores.hash_fields)})."
        )
    _check_fields(first.keys(), scores)
    if hash_batch({f: [first[f]] for f in scores.hash_fields}, scores.hash_fields)[0] not in scores:
        raise ValueError(
            "The first example of the stream has no SEAL score: these scores were computed on another dataset "
            "(pass allow_missing=True to skip unscored examples)."
        )


def add_seal_scores(dataset, scores: SEALScores, *, allow_missing: bool = False, num_proc: int | None = None):
    """Add a `seal_score` column (float) and a `seal_rank` column (0 = best among the scored examples) to a
    `Dataset`, `DatasetDict`, `IterableDataset` or `IterableDatasetDict`.

    Args:
        dataset: The dataset; it must have the fields the scores were computed on.
        scores ([`SEALScores`]): The scores.
        allow_missing (`bool`, *optional*, defaults to `False`):
            If `False`, a row without a score is an error; if `True`, it gets `seal_score = NaN`, `seal_rank = -1`.
        num_proc (`int`, *optional*): Processes for `Dataset.map`.

    Raises:
        `ValueError`: an empty dataset (or split, or stream), a dataset without the scored fields, or (without
        `allow_missing`) rows without a score.
    """
    if _is_dict(dataset):
        scored = {}
        for split, ds in dataset.items():
            try:
                scored[split] = add_seal_scores(ds, scores, allow_missing=allow_missing, num_proc=num_proc)
            except ValueError as error:
                raise ValueError(f"split {split!r}: {error}") from None
        return type(dataset)(scored)
    _check_not_empty(dataset, scores, "score")
    _check_fields(dataset.column_names, scores)
    fields = scores.hash_fields

    def add(batch):
        hashes = hash_batch(batch, fields)
        values, ranks = [], []
        for h in hashes:
            i = scores._index.get(h)
            if i is None:
                if not allow_missing:
                    raise ValueError(f"An example (hash {h}) has no SEAL score; pass allow_missing=True to keep it.")
                values.append(float("nan"))
                ranks.append(-1)
            else:
                values.append(float(scores.scores[i]))
                ranks.append(int(scores.ranks[i]))
        return {"seal_score": values, "seal_rank": ranks}

    if _is_iterable(dataset):
        if not allow_missing:
            _peek_check(dataset, scores, "score")
        return dataset.map(add, batched=True)
    if not allow_missing:
        hashes = _row_hashes(dataset, scores, num_proc)
        matched = sum(h in scores for h in hashes)
        if matched == 0 and len(hashes) > 0:
            raise _no_match_error(scores)
        if matched < len(hashes):
            raise ValueError(
                f"{len(hashes) - matched} of {len(hashes)} rows have no SEAL score; pass allow_missing=True to keep "
                "them with a NaN score."
            )
    return dataset.map(
        add,
        batched=True,
        num_proc=num_proc,
        new_fingerprint=_fingerprint(dataset._fingerprint, "add_seal_scores", scores.digest(), allow_missing),
        desc="SEAL: adding scores",
    )


def seal_filter(
    dataset,
    scores: SEALScores,
    keep_ratio: float = 0.8,
    *,
    allow_missing: bool = False,
    num_proc: int | None = None,
):
    """Keep the `floor(keep_ratio · N)` best-scored rows of a dataset, in their original order.

    A `keep_ratio` that keeps no row (`keep_ratio · N < 1`) is an error, as an empty split is for `datasets`'
    `train_test_split`: raise `keep_ratio` to at least `1 / N`.

    - `Dataset` (and each split of a `DatasetDict`): N is the number of rows; ties go to the earlier row; the
      result carries an explicit fingerprint derived from the dataset's and the scores', so a re-run over a cached
      dataset loads it from the `datasets` cache.
    - `IterableDataset` (and `IterableDatasetDict`): N is the number of scored examples, and a row is kept when its
      example is among the top `floor(keep_ratio · N)` of the scores; the stream is filtered lazily.

    Args:
        dataset: The dataset; it must have the fields the scores were computed on.
        scores ([`SEALScores`]): The scores, from [`SEALTrainer.scores`] or `SEALScores.from_pretrained`.
        keep_ratio (`float`, *optional*, defaults to 0.8): The fraction p to keep, in (0, 1].
        allow_missing (`bool`, *optional*, defaults to `False`):
            If `False`, a row without a score is an error; if `True`, such rows are dropped (and N counts only the
            scored rows).
        num_proc (`int`, *optional*): Processes for `Dataset.map` / `Dataset.filter`.

    Raises:
        `ValueError`: keep_ratio outside (0, 1] or keeping no row, an empty dataset (or split, or stream), a dataset
        without the scored fields, or rows without a score (no row at all: scores from another dataset).
    """
    _check_keep_ratio(keep_ratio)
    if _is_dict(dataset):
        filtered = {}
        for split, ds in dataset.items():
            try:
                filtered[split] = seal_filter(ds, scores, keep_ratio, allow_missing=allow_missing, num_proc=num_proc)
            except ValueError as error:
                raise ValueError(f"split {split!r}: {error}") from None
        return type(dataset)(filtered)
    _check_not_empty(dataset, scores, "filter")
    _check_fields(dataset.column_names, scores)
    fields = scores.hash_fields
    if _is_iterable(dataset):
        if not allow_missing:
            _peek_check(dataset, scores, "filter")
        keep = scores.kept_hashes(keep_ratio)

        def keep_batch(batch):
            hashes = hash_batch(batch, fields)
            if not allow_missing:
                for h in hashes:
                    if h not in scores:
                        raise ValueError(
                            f"An example (hash {h}) has no SEAL score; pass allow_missing=True to drop it."
                        )
            return [h in keep for h in hashes]

        return dataset.filter(keep_batch, batched=True)

    hashes = _row_hashes(dataset, scores, num_proc)
    row_scores = torch.tensor([scores.get(h, float("nan")) for h in hashes], dtype=torch.float64)
    missing = torch.isnan(row_scores)
    if len(hashes) > 0 and bool(missing.all()):
        raise _no_match_error(scores)
    if bool(missing.any()) and not allow_missing:
        raise ValueError(
            f"{int(missing.sum())} of {len(hashes)} rows have no SEAL score; pass allow_missing=True to drop them."
        )
    num_scored = int((~missing).sum())
    k = math.floor(keep_ratio * num_scored + 1e-9)
    _check_keeps_some(keep_ratio, k, num_scored, "scored rows" if allow_missing else "rows")
    keep = top_k_mask(torch.where(missing, torch.full_like(row_scores, -math.inf), row_scores), k).numpy()
    return dataset.filter(
        lambda _, indices: keep[indices].tolist(),
        with_indices=True,
        input_columns=[fields[0]],
        batched=True,
        num_proc=num_proc,
        new_fingerprint=_fingerprint(dataset._fingerprint, "seal_filter", scores.digest(), keep_ratio, allow_missing),
        desc=f"SEAL: keeping {k} of {len(hashes)} rows",
    )
