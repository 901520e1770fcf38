"""Run a MergeAlign merge with mergekit: validation first, then the merge, the similarity report and the card.

[`merge`] is what `hf-ext merge CONFIG OUT [mergekit-yaml options]` runs: it checks the whole configuration
before any tensor is read (roles, base model, parameter ranges, tensor shapes, LoRA adapters), runs mergekit's
own `run_merge` with every mergekit option, records the cosine and norms of the two task vectors while the
tensors stream through the merge (no second pass over the models), and writes next to the merged model the
similarity report (`mergealign_similarity.json` + `.png`) and a model card carrying the MergeAlign configuration
and the similarity summary.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_ext._validation import check_range


__all__ = ["MergeAlignPlan", "MergeAlignWarning", "load_config", "merge", "validate_config"]

logger = logging.getLogger(__name__)

MODEL_PARAMETERS = ("role",)
GLOBAL_PARAMETERS = ("alpha", "scale")
RANGES = {"alpha": (0.0, 1.0), "scale": (0.0, math.inf)}


class MergeAlignWarning(UserWarning):
    """A MergeAlign merge ran, but something about its inputs deserves a look (see the similarity report)."""


@dataclass
class MergeAlignPlan:
    """A validated MergeAlign configuration.

    Args:
        config (`mergekit.config.MergeConfiguration`):
            The configuration mergekit runs: a bare adapter
            folder rewritten to mergekit's `base+adapter` form.
        source (`str`): The configuration as the user wrote it (YAML), for `mergekit_config.yml` and the card.
        base_model, domain_model, alignment_model (`str`): The three inputs as written in the configuration.
        alpha, scale: The `alpha` and `scale` settings (a number, a gradient list, or mergekit conditionals).
        references (`dict[str, str]`): The mergekit reference of each role (`"domain"`, `"alignment"`) in `config`.
        adapters (`dict[str, Path]`): For each input that is a LoRA adapter, its folder (keyed by the input's
            mergekit reference).
    """

    config: Any
    source: str
    base_model: str
    domain_model: str
    alignment_model: str
    alpha: Any = 0.5
    scale: Any = 1.0
    references: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, Path] = field(default_factory=dict)

    def method_config(self) -> dict:
        """The MergeAlign settings as the card and the report record them."""
        return {
            "merge_method": "mergealign",
            "base_model": self.base_model,
            "domain_model": self.domain_model,
            "alignment_model": self.alignment_model,
            "alpha": _plain(self.alpha),
            "scale": _plain(self.scale),
            "dtype": self.config.dtype,
            "lora_inputs": sorted(role for role, ref in self.references.items() if ref in self.adapters),
        }


def _plain(value):
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_config(config) -> tuple[Any, str]:
    """`(MergeConfiguration, YAML source)` from a path, a YAML string, a dict or a `MergeConfiguration`."""
    import yaml
    from mergekit.config import MergeConfiguration

    if isinstance(config, MergeConfiguration):
        return config.model_copy(deep=True), config.to_yaml()
    if isinstance(config, Mapping):
        source = yaml.safe_dump(dict(config), sort_keys=False)
    elif isinstance(config, (str, os.PathLike)) and (isinstance(config, os.PathLike) or "\n" not in config):
        path = Path(config)
        if not path.is_file():
            raise ValueError(
                f"config={str(config)!r} is not a file; expected a mergekit YAML file, a YAML string or a dict."
            )
        source = path.read_text(encoding="utf-8")
    elif isinstance(config, str):
        source = config
    else:
        raise ValueError(
            f"config has type {type(config).__name__}; expected a path, a YAML string, a dict or a MergeConfiguration."
        )
    data = yaml.safe_load(source)
    if not isinstance(data, Mapping):
        raise ValueError(f"The merge configuration must be a YAML mapping; got {type(data).__name__}.")
    try:
        return MergeConfiguration.model_validate(data), source
    except Exception as error:  # pydantic's ValidationError, or mergekit's RuntimeError from its validators
        raise ValueError(f"Invalid mergekit configuration: {error}") from None


def _numbers(setting) -> list:
    """Every scalar of a parameter setting (a scalar, a gradient list, mergekit conditionals)."""
    if hasattr(setting, "value"):  # ConditionalParameter
        return _numbers(setting.value)
    if isinstance(setting, list):
        return [n for item in setting for n in _numbers(item)]
    return [setting]


def _check_range(name: str, setting) -> None:
    low, high = RANGES[name]
    for value in _numbers(setting):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            allowed = f"[{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
            raise ValueError(
                f"{name}={setting!r} is not valid for mergealign: expected a number {allowed}, or a gradient list of "
                "such numbers."
            )


def validate_config(config) -> MergeAlignPlan:
    """Check a MergeAlign configuration completely, before any tensor is read, and return its [`MergeAlignPlan`].

    Raises a `ValueError` naming the problem when the merge method is not `mergealign`, the base model is
    missing, the roles are not exactly one `domain` and one `alignment`, a parameter is unknown or out of range,
    a LoRA adapter is not a plain LoRA or does not fit the base, or a tensor of a (local) input has another shape
    than the base's.

    Args:
        config: A path to a mergekit YAML file, a YAML string, a dict or a `MergeConfiguration`.
    """
    from mergekit.common import ModelReference

    from .weights import check_same_shapes, is_adapter_folder

    merge_config, source = load_config(config)
    if merge_config.merge_method != "mergealign":
        raise ValueError(f"merge_method={merge_config.merge_method!r}; this command runs merge_method: mergealign.")
    if merge_config.base_model is None:
        raise ValueError(
            "base_model is missing: mergealign needs the base model that both the domain and the aligned model were "
            "fine-tuned from (their task vectors are taken against it)."
        )
    if not merge_config.models:
        raise ValueError(
            "mergealign configurations list their inputs under `models:` (one with role: domain, one with role: "
            "alignment); use gradient values of alpha / scale for per-layer weights instead of slices or modules."
        )
    for key, value in (merge_config.parameters or {}).items():
        if key not in GLOBAL_PARAMETERS:
            hint = " (role is set per model)" if key in MODEL_PARAMETERS else ""
            raise ValueError(f"Unknown parameter {key!r} for mergealign{hint}; expected {list(GLOBAL_PARAMETERS)}.")
        _check_range(key, value)
    parameters = merge_config.parameters or {}

    base = merge_config.base_model
    if base.lora is not None:
        raise ValueError(
            f"base_model={str(merge_config.base_model)!r} is a LoRA reference; the base must be a full model."
        )
    roles: dict[str, list[int]] = {"domain": [], "alignment": []}
    base_positions = []
    for index, model in enumerate(merge_config.models):
        reference = model.model
        model_parameters = dict(model.parameters or {})
        if reference == base:
            base_positions.append(index)
            if model_parameters:
                raise ValueError(
                    f"The base model {str(model.model)!r} is listed in models with parameters {model_parameters}; the base takes no role."
                )
            continue
        for key in model_parameters:
            if key not in MODEL_PARAMETERS:
                hint = (
                    " (alpha and scale are global: put them under the top-level `parameters:`)"
                    if key in GLOBAL_PARAMETERS
                    else ""
                )
                raise ValueError(
                    f"Unknown parameter {key!r} for model {str(model.model)!r}{hint}; expected {list(MODEL_PARAMETERS)}."
                )
        role = model_parameters.get("role")
        if role is None:
            raise ValueError(
                f"Model {str(model.model)!r} has no role; give it `parameters: {{role: domain}}` or `{{role: alignment}}`."
            )
        if role not in roles:
            raise ValueError(f"Model {str(model.model)!r} has role={role!r}; expected 'domain' or 'alignment'.")
        roles[role].append(index)
    for role, indices in roles.items():
        if len(indices) != 1:
            found = [str(merge_config.models[i].model) for i in indices]
            raise ValueError(
                f"mergealign needs exactly one model with role {role!r}; found {len(indices)}"
                f"{': ' + ', '.join(found) if found else ''}."
            )
    if len(merge_config.models) - len(base_positions) != 2:
        raise ValueError(
            f"mergealign merges exactly two models into the base; the configuration lists {len(merge_config.models)}."
        )

    # Rewrite the references: a bare adapter folder becomes `base+adapter`.
    adapters: dict[str, Path] = {}
    rewritten = merge_config.model_copy(deep=True)
    rewritten.base_model = base
    for model in rewritten.models:
        reference = model.model
        if reference.lora is None and is_adapter_folder(reference.model.path):
            reference = ModelReference(model=base.model, lora=reference.model)
        model.model = reference
        if reference.lora is not None:
            adapters[str(reference)] = _local_folder(reference.lora)
    written = {role: str(merge_config.models[indices[0]].model) for role, indices in roles.items()}
    references = {role: rewritten.models[indices[0]].model for role, indices in roles.items()}
    if references["domain"] == references["alignment"]:
        raise ValueError(f"The domain and the alignment model are the same model ({written['domain']!r}).")

    # Shapes, from the safetensors headers of local inputs (remote ones are checked by mergekit as it loads them).
    base_shapes = _local_shapes(base.model.path)
    if base_shapes is not None:
        from .lora import LoraAdapter

        for role, reference in references.items():
            if reference.lora is not None:
                LoraAdapter(adapters[str(reference)]).check_shapes(base_shapes, role=role)
                if reference.model != base.model and (shapes := _local_shapes(reference.model.path)) is not None:
                    check_same_shapes(base_shapes, shapes, role=role, path=reference.model.path, require_all=False)
            elif (shapes := _local_shapes(reference.model.path)) is not None:
                check_same_shapes(base_shapes, shapes, role=role, path=reference.model.path, require_all=False)
    return MergeAlignPlan(
        config=rewritten,
        source=source,
        base_model=str(merge_config.base_model),
        domain_model=written["domain"],
        alignment_model=written["alignment"],
        alpha=parameters.get("alpha", 0.5),
        scale=parameters.get("scale", 1.0),
        references={role: str(reference) for role, reference in references.items()},
        adapters=adapters,
    )


def _local_shapes(path: str) -> dict[str, tuple[int, ...]] | None:
    from .weights import CheckpointWeights

    if not os.path.isdir(path):
        return None
    try:
        return CheckpointWeights(path).shapes()
    except ValueError:  # not a safetensors checkpoint: mergekit reads it and checks shapes itself
        return None


def _local_folder(model_path) -> Path:
    if os.path.isdir(model_path.path):
        return Path(model_path.path)
    from ..hub import resolve_folder

    return resolve_folder(model_path.path, revision=model_path.revision)


@contextmanager
def adapter_loaders(plan: MergeAlignPlan, options) -> Iterator[None]:
    """Serve the plan's LoRA inputs to mergekit tensor by tensor (see `lora.AdapterTensorLoader`), so that mergekit
    never writes a merged copy of them; mergekit's loader cache is restored afterwards."""
    with serve_adapters(plan.config, options, plan.adapters):
        yield


@contextmanager
def serve_adapters(config, options, adapters: Mapping[str, Path] | None = None) -> Iterator[None]:
    """Serve every `base+adapter` input of a mergekit configuration (any merge method) to mergekit tensor by tensor,
    as the base tensor plus the adapter's update, instead of mergekit merging the adapter into a saved copy.

    Args:
        config (`mergekit.config.MergeConfiguration`): The configuration about to run.
        options (`mergekit.options.MergeOptions`): Its options (the tensor cache and unpickling settings).
        adapters (`Mapping[str, Path]`, *optional*): The local folder of each LoRA reference (keyed by the
            reference's string); by default the references' own paths (downloaded when they are Hub ids).
    """
    from mergekit.common import ModelReference
    from mergekit.io.tasks import LoaderCache

    from .lora import AdapterTensorLoader, LoraAdapter

    references = [model.model for model in config.models or []]
    if config.base_model is not None:
        references.append(config.base_model)
    cache = LoaderCache()
    previous = {}
    try:
        for reference in references:
            if reference.lora is None or reference in previous:
                continue
            folder = adapters[str(reference)] if adapters else _local_folder(reference.lora)
            base_loader = ModelReference(model=reference.model).lazy_loader(
                cache_dir=options.transformers_cache, lazy_unpickle=options.lazy_unpickle
            )
            previous[reference] = cache.loaders.get(reference)
            cache.loaders[reference] = AdapterTensorLoader(base_loader, LoraAdapter(folder))
        yield
    finally:
        for reference, loader in previous.items():
            if loader is None:
                cache.loaders.pop(reference, None)
            else:
                cache.loaders[reference] = loader


def _merge_options(options, overrides: dict):
    from mergekit.options import MergeOptions

    if options is None:
        options = {}
    if isinstance(options, MergeOptions):
        options = options.model_dump()
    unknown = sorted(set(overrides) - set(MergeOptions.model_fields))
    if unknown:
        raise ValueError(f"Unknown mergekit option(s) {unknown}; expected fields of mergekit.options.MergeOptions.")
    return MergeOptions(**{**dict(options), **overrides})


def merge(
    config,
    out_path: str | os.PathLike,
    *,
    options=None,
    report: bool = True,
    derived_threshold: float = 0.5,
    **option_overrides,
):
    """Merge with MergeAlign through mergekit, and write the similarity report and the card next to the model.

    ```python
    from hf_ext.mergealign import merge

    report = merge("mergealign.yaml", "merged", copy_tokenizer=True)
    print(report.summary["cosine"], report.warnings)
    ```

    Args:
        config: A mergekit YAML file (path), a YAML string, a dict or a `MergeConfiguration` with
            `merge_method: mergealign` (see `hf_ext.mergealign.method`).
        out_path (`str` or `os.PathLike`): The output folder.
        options (`mergekit.options.MergeOptions` or `dict`, *optional*): mergekit's options (those of `mergekit-yaml`).
        report (`bool`, *optional*, defaults to `True`):
            Record the similarity of the two task vectors during the merge and write `mergealign_similarity.json`
            and `mergealign_similarity.png` (the card then carries the summary).
        derived_threshold (`float`, *optional*, defaults to 0.5):
            Warn that the domain model looks derived from the aligned model when its vector contains at least this
            share of the alignment vector (see `SimilarityReport`).
        option_overrides: Any field of `MergeOptions` (`copy_tokenizer=False`, `out_shard_size=...`, `cuda=True`).

    Returns:
        [`SimilarityReport`] (or `None` with `report=False`).

    Writing is all or nothing, as with `save_pretrained`: the merge goes to a staging folder beside `out_path` and its
    files are moved into `out_path` only once all are written, so a failed merge leaves `out_path` as it was. A folder
    that already holds a merged model gets the new one in its place: the files of the earlier model (weights and
    shards, their index, configuration, tokenizer, card, report; see `MERGE_OUTPUT_FILES`) are replaced or removed,
    so that e.g. a `model.safetensors` never survives beside new shards; other files are kept. (`hf-ext merge`
    refuses a non-empty folder unless given `--overwrite`.)
    """
    from mergekit.merge import run_merge

    from ..hub import save_card
    from ..serialization import staged_save, write_text
    from . import method
    from .report import SimilarityReport

    check_range("derived_threshold", derived_threshold, gt=0, le=1)
    options = _merge_options(options, option_overrides)
    check_model_paths(load_config(config)[0])
    plan = validate_config(config)
    with staged_save(out_path, replace=MERGE_OUTPUT_FILES, what="out_path") as staging:
        with adapter_loaders(plan, options), method.record_statistics() if report else _nothing() as statistics:
            run_merge(
                plan.config.model_copy(deep=True),  # mergekit normalizes the configuration in place
                str(staging),
                options=options.model_copy(update={"write_model_card": False}),
                config_source=plan.source,
            )
        similarity = None
        if report:
            similarity = SimilarityReport.from_statistics(
                statistics,
                base_model=plan.base_model,
                domain_model=plan.domain_model,
                alignment_model=plan.alignment_model,
                derived_threshold=derived_threshold,
            )
            similarity.save(staging)
        if options.write_model_card:
            write_text(staging / "mergekit_config.yml", plan.source)
            save_card(model_card(plan, similarity), staging)
    if similarity is not None:
        for message in similarity.warnings:
            warnings.warn(message, MergeAlignWarning, stacklevel=2)
    return similarity


MERGE_OUTPUT_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
    "mergekit_config.yml",
    "README.md",
    "mergealign_similarity.*",
)
"""The files of a merged model (`fnmatch` patterns) that a new [`merge`] into the same folder replaces or removes."""


def check_model_paths(merge_config) -> None:
    """Check every model and adapter path of a mergekit configuration as a local path first: one that can only be a
    local path and does not exist is a `FileNotFoundError` naming it (mergekit would try it as a Hub id and report
    "Repo id must use alphanumeric chars"); other names are left to the Hub."""
    from ..paths import resolve_local_or_hub

    for reference in merge_config.referenced_models():
        resolve_local_or_hub(reference.model.path, "model")
        if reference.lora is not None:
            resolve_local_or_hub(reference.lora.path, "LoRA adapter")


@contextmanager
def _nothing():
    yield None


def model_card(plan: MergeAlignPlan, similarity=None):
    """The merged model's card: the MergeAlign configuration, the similarity summary and the mergekit YAML."""
    from ..hub import make_card

    hub_ids = [ref for ref in (plan.base_model, plan.domain_model, plan.alignment_model) if _looks_like_hub_id(ref)]
    method_config = plan.method_config()
    if similarity is not None:
        method_config["similarity"] = similarity.card_summary()
    return make_card(
        "mergealign",
        method="mergealign",
        base_model=hub_ids or None,
        tags=["merge", "mergekit"],
        method_config=method_config,
        title=f"MergeAlign merge of {plan.domain_model} and {plan.alignment_model}",
        plan=plan,
        similarity=similarity,
        config_yaml=plan.source.rstrip(),
    )


def _looks_like_hub_id(reference: str) -> bool:
    path = reference.split("+")[0].split("@")[0]
    return not os.path.exists(path) and path.count("/") == 1 and not path.startswith(("/", ".", "~"))
