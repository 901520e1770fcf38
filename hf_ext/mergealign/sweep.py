"""Alpha search: score MergeAlign merges over a grid of alpha (and scale) without writing any of them.

The base model is loaded once (in full precision, or in 4-bit with bitsandbytes to fit a larger model); for
each candidate `(alpha, scale)` its weights are overwritten in place with
`base + scale * (alpha * tau_D + (1 - alpha) * tau_A)`, read tensor by tensor from the three checkpoints (or
LoRA adapters), and the candidate is scored by a safety evaluator and a domain evaluator. The sweep writes the
table (`sweep.json`, `sweep.md`), the per-sample scores (`per_sample_scores.safetensors`) and the Pareto-front
plot (`pareto.png`), and picks the candidate with the best domain score among those above the safety floor.

```python
from datasets import Dataset
from hf_ext.mergealign import PerplexityEvaluator, sweep_alpha

result = sweep_alpha(
    "base", "domain-expert", "aligned",
    safety_evaluator=PerplexityEvaluator(safety_set, name="safety_perplexity"),
    domain_evaluator=PerplexityEvaluator(domain_set, name="domain_perplexity"),
    alphas=[0.0, 0.25, 0.5, 0.75, 1.0],
    safety_floor=2.5,  # the worst acceptable safety perplexity
    output_dir="sweep",
)
print(result.selected)  # {"alpha": ..., "scale": ...}
```
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hf_ext._validation import check_range

from .evaluators import EvaluationResult, as_evaluation_result
from .pareto import meets_floor, pareto_front, select_candidate
from .vectors import accumulation_dtype


__all__ = ["AlphaSweepConfig", "AlphaSweepResult", "CandidateModel", "run_sweep", "sweep_alpha"]


@dataclass
class AlphaSweepConfig:
    """Configuration of `hf-ext mergealign-sweep`: the three models, the grid, the evaluation sets and the floor.

    The models come either from `merge_config` (a mergealign YAML: its base and the models with role domain /
    alignment) or from `base_model`, `domain_model` and `alignment_model`. The default evaluators are the
    perplexity of the safety set's and of the domain set's completions (see `PerplexityEvaluator`).
    """

    merge_config: str | None = field(
        default=None,
        metadata={"help": "A mergealign YAML configuration to take the base, domain and alignment models from."},
    )
    base_model: str | None = field(default=None, metadata={"help": "The base model (folder or Hub id)."})
    domain_model: str | None = field(
        default=None, metadata={"help": "The domain expert (full model, or a PEFT LoRA adapter trained on the base)."}
    )
    alignment_model: str | None = field(
        default=None, metadata={"help": "The aligned model (full model, or a PEFT LoRA adapter trained on the base)."}
    )
    alphas: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
        metadata={"help": "The values of alpha (weight of the domain vector, each in [0, 1]) to try."},
    )
    scales: list[float] = field(
        default_factory=lambda: [1.0], metadata={"help": "The values of scale (lambda >= 0) to try with every alpha."}
    )
    safety_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Safety set: a json / jsonl / csv / parquet file, a save_to_disk folder or a dataset id, with "
            "prompt + completion columns (harmful prompts, safe answers) or a text column."
        },
    )
    domain_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Domain set: same formats, with prompt + completion (domain questions, reference answers) or text."
        },
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split to read from dataset ids and save_to_disk folders."}
    )
    max_samples: int | None = field(default=256, metadata={"help": "Evaluate at most this many rows of each set."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass of the evaluators."})
    max_length: int = field(default=512, metadata={"help": "Truncate evaluated sequences to this many tokens."})
    safety_floor: float | None = field(
        default=None,
        metadata={
            "help": "The worst acceptable safety score: with the default perplexity evaluator, the highest acceptable "
            "safety perplexity. The selected candidate has the best domain score among those meeting it."
        },
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "Score candidates in 4-bit NF4 (bitsandbytes) to fit larger models in memory."},
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "Dtype of the candidate model in full precision: float32, bfloat16, float16, or auto (the base's)."
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "Where candidates run: cpu, cuda, ... (default: cuda if available)."}
    )
    output_dir: str = field(
        default="mergealign-sweep", metadata={"help": "Where the table, the plot and the scores go."}
    )
    save_selected: bool = field(
        default=False,
        metadata={"help": "Also write the selected merge (with `hf-ext merge`) to <output_dir>/selected."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a non-empty output_dir as a whole (refused without it, before any model loads)."},
    )

    def __post_init__(self):
        if self.merge_config is None and not (self.base_model and self.domain_model and self.alignment_model):
            raise ValueError(
                "merge_config=None and base_model / domain_model / alignment_model are incomplete; give a mergealign "
                "YAML or all three models."
            )
        if not self.alphas:
            raise ValueError("alphas=[] is empty; expected at least one value in [0, 1].")
        for alpha in self.alphas:
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alphas={self.alphas} holds {alpha}, out of range; expected values in [0, 1].")
        if not self.scales:
            raise ValueError("scales=[] is empty; expected at least one value >= 0.")
        for scale in self.scales:
            if not (scale >= 0.0 and math.isfinite(scale)):
                raise ValueError(f"scales={self.scales} holds {scale}, out of range; expected finite values >= 0.")
        check_range("max_samples", self.max_samples, ge=1, integer=True, optional=True)
        check_range("batch_size", self.batch_size, ge=1, integer=True)
        check_range("max_length", self.max_length, ge=2, integer=True)
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"dtype={self.dtype!r} is not supported; expected float32, bfloat16, float16 or auto.")
        if self.safety_floor is not None and not math.isfinite(self.safety_floor):
            raise ValueError(f"safety_floor={self.safety_floor} is not finite; expected a number or None.")


class CandidateModel:
    """The base model, loaded once, whose weights are set to the MergeAlign merge of any `(alpha, scale)`.

    Args:
        vectors (`TaskVectors`): The base and the two task vectors.
        load_in_4bit (`bool`, *optional*, defaults to `False`):
            Load the model in 4-bit NF4 (bitsandbytes); each candidate's linear weights are then quantized from the
            float32 merge, exactly as loading the written merge in 4-bit would.
        dtype (`torch.dtype`, *optional*): Dtype of the full-precision model (default: the checkpoint's).
        device (`str`, *optional*): Where the model runs (default: CUDA when available, else CPU).
    """

    def __init__(
        self, vectors, *, load_in_4bit: bool = False, dtype: torch.dtype | None = None, device: str | None = None
    ):
        from transformers import AutoModelForCausalLM

        self.vectors = vectors
        self.load_in_4bit = load_in_4bit
        if load_in_4bit:
            from ..quantization import load_quantized

            device_map = {"": device} if device is not None else None
            self.model = load_quantized(str(vectors.base_path), bits=4, device_map=device_map)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(str(vectors.base_path), dtype=dtype or "auto")
            self.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.eval()
        # The dtype weights are read in before 4-bit quantization (the dtype of the model's unquantized parameters).
        self._load_dtype = next(p.dtype for p in self.model.parameters() if p.dtype.is_floating_point)
        self._targets = self._map_parameters()

    def _map_parameters(self) -> dict[str, tuple[torch.nn.Module, str]]:
        """Checkpoint tensor name -> (module, attribute) of the model."""
        targets = {}
        named = dict(self.model.named_parameters(remove_duplicate=False))
        unmapped = []
        for name in self.vectors.names:
            if name not in named:
                unmapped.append(name)
                continue
            module_name, _, attribute = name.rpartition(".")
            targets[name] = (self.model.get_submodule(module_name), attribute)
        if unmapped:
            raise ValueError(
                f"Cannot place checkpoint tensor(s) {unmapped[:3]} of {self.vectors.base_path} in the loaded model "
                "(its parameter names differ from the checkpoint's)."
            )
        covered = {id(getattr(module, attribute)) for module, attribute in targets.values()}
        missing = [n for n, p in self.model.named_parameters() if id(p) not in covered]
        if missing:
            raise ValueError(f"The checkpoint {self.vectors.base_path} has no tensor for parameter(s) {missing[:3]}.")
        return targets

    @torch.no_grad()
    def set_weights(self, alpha: float, scale: float = 1.0, progress: bool = False) -> None:
        """Overwrite the model's weights with the merge `base + scale * (alpha * tau_D + (1 - alpha) * tau_A)`."""
        from tqdm.auto import tqdm

        from .vectors import check_merged, combine_vectors

        for name in tqdm(
            self.vectors.names, desc=f"alpha={alpha:g}, scale={scale:g}", disable=not progress, leave=False
        ):
            # Merged where the weight lives (the GPU), from the inputs in their stored dtype.
            base, tau_domain, tau_alignment = self.vectors.get(name, device=self._device_of(name))
            if not base.is_floating_point():
                continue
            dtype = accumulation_dtype(base.dtype)
            if tau_domain is None and tau_alignment is None:
                merged = base.to(dtype)
            else:
                zeros = (
                    None
                    if (tau_domain is not None and tau_alignment is not None)
                    else torch.zeros(base.shape, dtype=dtype, device=base.device)
                )
                merged = combine_vectors(
                    base,
                    tau_domain if tau_domain is not None else zeros,
                    tau_alignment if tau_alignment is not None else zeros,
                    alpha,
                    scale,
                )
            self._assign(name, check_merged(merged.to(base.dtype), name, base, tau_domain, tau_alignment))

    def _device_of(self, name: str) -> torch.device:
        module, attribute = self._targets[name]
        return getattr(module, attribute).device

    def _assign(self, name: str, value: torch.Tensor) -> None:
        module, attribute = self._targets[name]
        current = getattr(module, attribute)
        if self.load_in_4bit and _is_4bit_weight(module, attribute):
            import bitsandbytes as bnb

            # What loading a checkpoint in 4-bit does with a weight: cast it to the load dtype, then quantize.
            replacement = bnb.nn.Params4bit(
                value.to(self._load_dtype),
                requires_grad=False,
                blocksize=current.blocksize,
                compress_statistics=current.compress_statistics,
                quant_type=current.quant_type,
                quant_storage=current.quant_storage,
                module=module,
            )
            module.weight = replacement.to(current.device)
            return
        current.data.copy_(value.to(device=current.device, dtype=current.dtype))


def _is_4bit_weight(module, attribute: str) -> bool:
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - bitsandbytes is a core dependency
        return False
    return attribute == "weight" and isinstance(module, bnb.nn.Linear4bit)


@dataclass
class AlphaSweepResult:
    """The scored grid of an alpha sweep.

    Args:
        candidates (`list[dict]`): One row per candidate: `alpha`, `scale`, `safety`, `domain`, `pareto`
            (Pareto-optimal), `meets_floor`, `selected`.
        per_sample (`dict[str, dict[str, np.ndarray]]`): Per candidate (key `"alpha=<a>,scale=<s>"`), the per-sample
            `safety` and `domain` scores.
        safety_name, domain_name (`str`): What the two evaluators measure.
        safety_higher_is_better, domain_higher_is_better (`bool`): Their directions.
        safety_floor (`float`, *optional*): The floor the selection honoured.
    """

    candidates: list[dict]
    per_sample: dict[str, dict[str, np.ndarray]]
    safety_name: str
    domain_name: str
    safety_higher_is_better: bool
    domain_higher_is_better: bool
    safety_floor: float | None = None

    @property
    def selected(self) -> dict | None:
        """The selected candidate's row, or `None` when no candidate meets the safety floor."""
        return next((row for row in self.candidates if row["selected"]), None)

    @staticmethod
    def key(alpha: float, scale: float) -> str:
        return f"alpha={alpha:g},scale={scale:g}"

    def to_markdown(self) -> str:
        arrow = {True: "↑", False: "↓"}
        lines = [
            f"| alpha | scale | {self.safety_name} {arrow[self.safety_higher_is_better]} | "
            f"{self.domain_name} {arrow[self.domain_higher_is_better]} | Pareto | meets floor | selected |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in self.candidates:
            lines.append(
                f"| {row['alpha']:g} | {row['scale']:g} | {row['safety']:.4f} | {row['domain']:.4f} | "
                f"{'yes' if row['pareto'] else ''} | {'yes' if row['meets_floor'] else 'no'} | {'**yes**' if row['selected'] else ''} |"
            )
        floor = "none" if self.safety_floor is None else f"{self.safety_floor:g}"
        selected = self.selected
        choice = (
            f"alpha={selected['alpha']:g}, scale={selected['scale']:g}"
            if selected
            else "none (no candidate meets the safety floor)"
        )
        return "\n".join(lines) + f"\n\nSafety floor: {floor}. Selected: {choice}.\n"

    def to_dict(self) -> dict:
        return {
            "safety_name": self.safety_name,
            "domain_name": self.domain_name,
            "safety_higher_is_better": self.safety_higher_is_better,
            "domain_higher_is_better": self.domain_higher_is_better,
            "safety_floor": self.safety_floor,
            "selected": self.selected,
            "candidates": self.candidates,
        }

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write `sweep.json`, `sweep.md`, `per_sample_scores.safetensors` and `pareto.png`; returns the folder.

        All or nothing, as `save_pretrained`: the files are written to a staging folder and moved into `output_dir`
        once all are written; the files of an earlier sweep there are replaced, other files are kept.
        """
        from ..serialization import save_json, save_tensors, staged_save, write_text

        output_dir = Path(output_dir).expanduser()
        with staged_save(output_dir, replace=SWEEP_FILES, what="output_dir") as staging:
            save_json(staging / "sweep.json", self.to_dict())
            write_text(staging / "sweep.md", self.to_markdown())
            tensors = {
                f"{key}/{metric}": torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
                for key, metrics in self.per_sample.items()
                for metric, values in metrics.items()
            }
            save_tensors(staging / "per_sample_scores.safetensors", tensors)
            self.plot(staging / "pareto.png")
        return output_dir

    def plot(self, path: str | os.PathLike) -> Path:
        """Safety against domain score for every candidate, the Pareto front joined, the selection circled."""
        from ..plotting import figure, save_figure

        fig, ax = figure(figsize=(6.4, 4.8))
        rows = self.candidates
        scales = sorted({row["scale"] for row in rows})
        for scale in scales:
            subset = [row for row in rows if row["scale"] == scale]
            ax.scatter(
                [r["domain"] for r in subset], [r["safety"] for r in subset], label=f"scale={scale:g}", zorder=3
            )
            for r in subset:
                ax.annotate(
                    f"α={r['alpha']:g}",
                    (r["domain"], r["safety"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
        front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["domain"])
        if len(front) > 1:
            ax.plot(
                [r["domain"] for r in front],
                [r["safety"] for r in front],
                color="gray",
                linestyle="--",
                label="Pareto front",
            )
        if self.safety_floor is not None:
            ax.axhline(self.safety_floor, color="tab:red", linewidth=0.8, label="safety floor")
        selected = self.selected
        if selected:
            ax.scatter(
                [selected["domain"]],
                [selected["safety"]],
                s=220,
                facecolors="none",
                edgecolors="tab:red",
                linewidths=1.5,
                label="selected",
                zorder=4,
            )
        ax.set_xlabel(f"{self.domain_name} ({'higher' if self.domain_higher_is_better else 'lower'} is better)")
        ax.set_ylabel(f"{self.safety_name} ({'higher' if self.safety_higher_is_better else 'lower'} is better)")
        ax.set_title("MergeAlign alpha sweep")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return save_figure(fig, path)


SWEEP_FILES = ("sweep.json", "sweep.md", "per_sample_scores.safetensors", "pareto.png")
"""The files [`AlphaSweepResult.save`] writes, which a new save into the same folder replaces."""


def sweep_alpha(
    base,
    domain,
    alignment,
    *,
    safety_evaluator,
    domain_evaluator,
    alphas=(0.0, 0.25, 0.5, 0.75, 1.0),
    scales=(1.0,),
    safety_floor: float | None = None,
    load_in_4bit: bool = False,
    dtype: torch.dtype | str | None = torch.float32,
    device: str | None = None,
    tokenizer=None,
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> AlphaSweepResult:
    """Score the MergeAlign merge of `base`, `domain` and `alignment` for every `(alpha, scale)`, in memory.

    Args:
        base, domain, alignment (`str` or `os.PathLike`):
            Model folders or Hub ids; `domain` and `alignment` may be PEFT LoRA
            adapters trained on `base`.
        safety_evaluator, domain_evaluator (`Callable[[model, tokenizer], EvaluationResult | float]`):
            Score a candidate (see `hf_ext.mergealign.evaluators`); a float is read as higher-is-better.
        alphas (`Sequence[float]`): Values of alpha in [0, 1].
        scales (`Sequence[float]`): Values of scale (lambda >= 0); every alpha is tried with every scale.
        safety_floor (`float`, *optional*): The worst acceptable safety score (for a lower-is-better safety
            score such as a perplexity, the highest acceptable value).
        load_in_4bit (`bool`, *optional*, defaults to `False`): Score candidates in 4-bit NF4.
        dtype (`torch.dtype` or `"auto"`, *optional*, defaults to float32): Dtype of the full-precision candidate.
        device (`str`, *optional*): Where candidates run (default: CUDA when available, else CPU).
        tokenizer (*optional*): Defaults to the base model's tokenizer.
        output_dir (`str` or `os.PathLike`, *optional*): If given, the results are saved there (see
            [`AlphaSweepResult.save`]).
        progress (`bool`, *optional*, defaults to `True`): Show progress bars.

    A candidate whose safety or domain score is NaN or infinite is left out of the Pareto front and the selection,
    with a warning naming it (its row keeps the scores as returned); when every candidate is, `ValueError`.
    """
    from tqdm.auto import tqdm

    from .weights import TaskVectors

    config = AlphaSweepConfig(
        base_model=str(base),
        domain_model=str(domain),
        alignment_model=str(alignment),
        alphas=list(alphas),
        scales=list(scales),
    )  # validates the grid
    if safety_floor is not None and not math.isfinite(safety_floor):
        raise ValueError(f"safety_floor={safety_floor} is not finite; expected a number or None.")
    for label, evaluator in (("safety_evaluator", safety_evaluator), ("domain_evaluator", domain_evaluator)):
        if not callable(evaluator):
            raise ValueError(
                f"{label}={evaluator!r} is not callable; expected a function (model, tokenizer) -> score."
            )
    vectors = TaskVectors(base, domain, alignment)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(vectors.base_path))
    if isinstance(dtype, str):
        dtype = None if dtype == "auto" else getattr(torch, dtype)
    candidate = CandidateModel(vectors, load_in_4bit=load_in_4bit, dtype=dtype, device=device)

    grid = [(alpha, scale) for scale in config.scales for alpha in config.alphas]
    results: list[tuple[float, float, EvaluationResult, EvaluationResult]] = []
    for alpha, scale in tqdm(grid, desc="MergeAlign alpha sweep", disable=not progress):
        candidate.set_weights(alpha, scale)
        safety = as_evaluation_result(safety_evaluator(candidate.model, tokenizer), "safety")
        domain_score = as_evaluation_result(domain_evaluator(candidate.model, tokenizer), "domain")
        results.append((alpha, scale, safety, domain_score))
    del candidate

    safety_up, domain_up = _directions(results)
    scored = [i for i, (_, _, safety, domain_score) in enumerate(results) if _finite(safety.score, domain_score.score)]
    if not scored:
        raise ValueError(
            f"Every candidate got a NaN or infinite score (safety {[r[2].score for r in results]}, domain "
            f"{[r[3].score for r in results]}): nothing to compare. Check the evaluators."
        )
    if len(scored) < len(results):
        skipped = [AlphaSweepResult.key(*results[i][:2]) for i in range(len(results)) if i not in scored]
        warnings.warn(
            f"{len(skipped)} candidate(s) got a NaN or infinite safety or domain score and are left out of the Pareto "
            f"front and the selection: {', '.join(skipped)}. Their rows keep the scores as returned.",
            UserWarning,
            stacklevel=2,
        )
    safety_scores = [results[i][2].score for i in scored]
    domain_scores = [results[i][3].score for i in scored]
    front = dict(
        zip(
            scored,
            pareto_front(
                safety_scores, domain_scores, safety_higher_is_better=safety_up, domain_higher_is_better=domain_up
            ),
        )
    )
    chosen = select_candidate(
        safety_scores,
        domain_scores,
        safety_floor=safety_floor,
        safety_higher_is_better=safety_up,
        domain_higher_is_better=domain_up,
    )
    chosen = None if chosen is None else scored[chosen]
    rows = [
        {
            "alpha": alpha,
            "scale": scale,
            "safety": safety.score,
            "domain": domain_score.score,
            "pareto": front.get(i, False),
            "meets_floor": i in front and meets_floor(safety.score, safety_floor, safety_up),
            "selected": i == chosen,
        }
        for i, (alpha, scale, safety, domain_score) in enumerate(results)
    ]
    result = AlphaSweepResult(
        candidates=rows,
        per_sample={
            AlphaSweepResult.key(alpha, scale): {
                "safety": np.asarray(s.per_sample),
                "domain": np.asarray(d.per_sample),
            }
            for alpha, scale, s, d in results
        },
        safety_name=results[0][2].name if results[0][2].name != "score" else "safety",
        domain_name=results[0][3].name if results[0][3].name != "score" else "domain",
        safety_higher_is_better=safety_up,
        domain_higher_is_better=domain_up,
        safety_floor=safety_floor,
    )
    if output_dir is not None:
        result.save(output_dir)
    return result


def _finite(*scores: float) -> bool:
    return all(math.isfinite(score) for score in scores)


def _directions(results) -> tuple[bool, bool]:
    """The directions of the safety and domain scores, the same for every candidate (else `ValueError`)."""
    directions = []
    for index, label in ((2, "safety"), (3, "domain")):
        seen = {result[index].higher_is_better for result in results}
        if len(seen) > 1:
            raise ValueError(
                f"The {label} evaluator returned higher_is_better=True for some candidates and False for others; "
                "a score keeps one direction."
            )
        directions.append(seen.pop())
    return directions[0], directions[1]


def load_evaluation_dataset(name_or_path: str, split: str = "train"):
    """A `datasets.Dataset` from a json / jsonl / csv / parquet file, a `save_to_disk` folder or a dataset id; local
    paths are tried first (a missing one is a `FileNotFoundError`, not a Hub lookup)."""
    import datasets

    from ..paths import hub_load_error, resolve_local_or_hub

    path = Path(resolve_local_or_hub(name_or_path, "dataset"))
    builders = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    if path.is_file():
        builder = builders.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"Cannot read {name_or_path}: expected a {sorted(builders)} file, a folder or a dataset id."
            )
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    if path.exists():
        return datasets.load_dataset(str(path), split=split)
    try:
        return datasets.load_dataset(name_or_path, split=split)
    except Exception as error:  # not found, gated, offline: datasets raises many kinds
        raise hub_load_error(name_or_path, "dataset", error, "dataset") from error


def run_sweep(config: AlphaSweepConfig) -> AlphaSweepResult:
    """What `hf-ext mergealign-sweep` runs: perplexity evaluators on the two datasets, the sweep, the files, and
    with `save_selected`, the selected merge written through `merge`.

    `output_dir` must be absent or empty, or `overwrite_output_dir` set (checked before any model loads); everything
    is written to a staging folder that replaces `output_dir` as a whole at the end, so a failed sweep leaves it as
    it was."""
    from ..serialization import atomic_directory, check_output_directory
    from .evaluators import PerplexityEvaluator

    for label in ("safety_dataset", "domain_dataset"):
        if getattr(config, label) is None:
            raise ValueError(f"{label}=None; the default evaluators need a safety set and a domain set.")
    check_output_directory(config.output_dir, overwrite=config.overwrite_output_dir, option="--overwrite_output_dir")
    if config.merge_config is not None:
        from .merging import validate_config

        plan = validate_config(config.merge_config)
        base = str(plan.config.base_model)
        domain = _input_path(plan.config.models, plan.config.base_model, plan.references["domain"])
        alignment = _input_path(plan.config.models, plan.config.base_model, plan.references["alignment"])
    else:
        base, domain, alignment = config.base_model, config.domain_model, config.alignment_model
    kwargs = {"batch_size": config.batch_size, "max_length": config.max_length, "max_samples": config.max_samples}
    safety_evaluator = PerplexityEvaluator(
        load_evaluation_dataset(config.safety_dataset, config.dataset_split), name="safety_perplexity", **kwargs
    )
    domain_evaluator = PerplexityEvaluator(
        load_evaluation_dataset(config.domain_dataset, config.dataset_split), name="domain_perplexity", **kwargs
    )
    with atomic_directory(
        config.output_dir, overwrite=config.overwrite_output_dir, option="--overwrite_output_dir"
    ) as staging:
        result = sweep_alpha(
            base,
            domain,
            alignment,
            safety_evaluator=safety_evaluator,
            domain_evaluator=domain_evaluator,
            alphas=config.alphas,
            scales=config.scales,
            safety_floor=config.safety_floor,
            load_in_4bit=config.load_in_4bit,
            dtype=config.dtype,
            device=config.device,
            output_dir=staging,
        )
        print(result.to_markdown())
        selected = result.selected
        if config.save_selected and selected is not None:
            from .merging import merge

            merge_config = _selected_config(config, base, domain, alignment, selected)
            merge(merge_config, staging / "selected")
    return result


def _input_path(models, base, reference: str) -> str:
    """The path the sweep reads for a mergekit input: the adapter folder of `base+adapter`, else the model."""
    for model in models:
        if str(model.model) != reference:
            continue
        if model.model.lora is None:
            return model.model.model.path
        if model.model.model != base.model:
            raise ValueError(
                f"The sweep applies LoRA adapters to the base model; {reference!r} applies one to another model."
            )
        return model.model.lora.path
    raise KeyError(reference)


def _selected_config(config: AlphaSweepConfig, base: str, domain: str, alignment: str, selected: dict) -> dict:
    if config.merge_config is not None:
        from .merging import load_config

        merge_config, _ = load_config(config.merge_config)
        data = merge_config.model_dump(mode="json", exclude_none=True)
        data["parameters"] = {**(data.get("parameters") or {}), "alpha": selected["alpha"], "scale": selected["scale"]}
        return data
    return {
        "merge_method": "mergealign",
        "base_model": base,
        "models": [
            {"model": domain, "parameters": {"role": "domain"}},
            {"model": alignment, "parameters": {"role": "alignment"}},
        ],
        "parameters": {"alpha": selected["alpha"], "scale": selected["scale"]},
    }
