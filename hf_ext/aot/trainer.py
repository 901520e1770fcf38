"""`AOTTrainer`: alignment via optimal transport as a TRL `DPOTrainer`."""

from __future__ import annotations

import json
import os
import textwrap
import warnings
from collections import deque
from pathlib import Path

import torch
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list, tqdm
from datasets import Dataset, IterableDataset, concatenate_datasets
from datasets.fingerprint import Hasher, is_caching_enabled
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoProcessor, PreTrainedTokenizerBase, ProcessorMixin
from trl import DPOTrainer
from trl.data_utils import _tokenize, common_prefix_length, is_conversational
from trl.models import prepare_deepspeed
from trl.trainer.utils import get_config_model_id, global_then_local_main_first

from .._checks import check_checkpoint_weights, check_tokenizer_fits
from ..quantization import keep_4bit_trainable
from .config import AOTConfig
from .data import DataCollatorForAOT, dataset_format, validate_preference_dataset
from .distributed import gather_across_processes
from .losses import dominance_diagnostics, quantile_ot_loss


__all__ = ["AOTTrainer"]

logger = get_logger(__name__)

# Batch keys that are not inputs of the model.
_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "ref_logps", "label"}
# Sorted batches smaller than this estimate the quantiles poorly (at size 1, paired AOT is exactly DPO).
MIN_SORTED_BATCH = 8
PLOT_FILE = "aot_reward_quantiles.png"
_PLOT_STEPS = 32  # the reward-quantile plot pools the rewards of this many recent steps


class AOTTrainer(DPOTrainer):
    """
    Trainer for AOT, alignment via optimal transport ([Melnyk et al., 2024](https://huggingface.co/papers/2406.05882)).

    A [`~trl.DPOTrainer`] whose loss asks the *distribution* of rewards of good answers to dominate the distribution of
    rewards of bad answers in the first stochastic order, instead of asking every pair to be ordered. The violation is
    relaxed by a convex cost and becomes a one-dimensional optimal-transport problem solved by sorting (see
    [`~hf_ext.aot.losses.quantile_ot_loss`]). Beyond TRL's `loss_type="aot"` / `"aot_unpaired"`, it supports:

    - unpaired data (`prompt` / `completion` / `label`, as [`~trl.KTOTrainer`]) with any number of desirable and
      undesirable completions per batch, the OT between samples of unequal sizes being computed exactly;
    - the costs `logistic`, `hinge`, `squared_hinge` and `least_squares`, with an explicit `beta` and margin, and an
      optional soft sort;
    - sorting over the global batch under DDP (`aot_global_sort`), so that the quantiles are estimated from every
      process's samples;
    - distributional diagnostics (`aot/violation_fraction`, `aot/ot_violation`, `aot/quantile_gap_{10,50,90}`) and a
      reward-quantile plot written at each save and logged through `report_to`.

    Example:

    ```python
    >>> from hf_ext.aot import AOTConfig, AOTTrainer
    >>> from hf_ext.testing.aot import synthetic_preference_dataset
    >>> from hf_ext.testing import tiny_model_dir

    >>> trainer = AOTTrainer(
    ...     model=str(tiny_model_dir("tiny-llama")),
    ...     args=AOTConfig("tiny-llama-aot", per_device_train_batch_size=16, max_steps=10, report_to="none"),
    ...     train_dataset=synthetic_preference_dataset(64),
    ... )
    >>> trainer.train()
    ```

    Args:
        model, ref_model, data_collator, train_dataset, eval_dataset, processing_class, compute_metrics, callbacks,
        optimizers, quantization_config, peft_config:
            As for [`~trl.DPOTrainer`]. The datasets may be paired (`prompt` / `chosen` / `rejected`, or implicit
            prompt) or, with `aot_variant="unpaired"`, unpaired (`prompt` / `completion` / `label`); standard or
            conversational. The default collator is [`~hf_ext.aot.data.DataCollatorForAOT`]. Before anything is
            loaded, the datasets are checked ([`~hf_ext.aot.data.validate_preference_dataset`]: missing values, empty
            answers, `chosen == rejected`, ...) and a model given by name is checked for weights its config needs
            and its checkpoint lacks (an error: they would start at random). As in `DPOTrainer`, rows whose prompt
            alone has `max_length` tokens or more are dropped; a warning counts them (an error when none is left).
        args ([`AOTConfig`], *optional*):
            Configuration for this trainer. If `None`, a default configuration is used.
    """

    _tag_names = ["trl", "dpo", "aot", "hf-ext"]
    _name = "AOT"
    _paper = {
        "title": "Distributional Preference Alignment of LLMs via Optimal Transport",
        "id": "2406.05882",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{melnyk2024distributional,
                title        = {{Distributional Preference Alignment of LLMs via Optimal Transport}},
                author       = {Igor Melnyk and Youssef Mroueh and Brian Belgodere and Mattia Rigotti and Apoorva Nitsure and Mikhail Yurochkin and Kristjan Greenewald and Jiri Navratil and Jerret Ross},
                year         = 2024,
                booktitle    = {Advances in Neural Information Processing Systems 38: Annual Conference on Neural Information Processing Systems 2024, NeurIPS 2024},
            }"""),
    }

    def __init__(
        self,
        model,
        ref_model=None,
        args: AOTConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = AOTConfig(f"{model_name.split('/')[-1]}-AOT")
        elif not isinstance(args, AOTConfig):
            raise TypeError(f"args must be an AOTConfig; got {type(args).__name__}. Build one with AOTConfig(...).")
        if args.truncation_mode != "keep_start":
            raise ValueError(
                f"truncation_mode={args.truncation_mode!r} is not supported by AOT; expected 'keep_start'."
            )

        # Check the data before loading anything.
        if train_dataset is None:
            raise ValueError("train_dataset is required; expected a paired or unpaired preference dataset.")
        validate_preference_dataset(train_dataset, "train_dataset", args.aot_variant)
        if isinstance(eval_dataset, dict):
            for key, dataset in eval_dataset.items():
                validate_preference_dataset(dataset, f"eval_dataset[{key!r}]", args.aot_variant)
        elif eval_dataset is not None:
            validate_preference_dataset(eval_dataset, "eval_dataset", args.aot_variant)

        if processing_class is None:
            processing_class = self._load_processing_class(model, args)
        _check_vocabularies(model, ref_model, processing_class, args)
        if isinstance(model, str):  # weights missing from the checkpoint would start at random, silently
            init_kwargs = args.model_init_kwargs or {}
            check_checkpoint_weights(
                model, revision=init_kwargs.get("revision"), trust_remote_code=args.trust_remote_code
            )
        if data_collator is None:
            tokenizer = (
                processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class
            )
            pad_token = args.pad_token or tokenizer.pad_token or tokenizer.eos_token
            if pad_token is None or pad_token not in tokenizer.get_vocab():
                raise ValueError(f"pad_token={pad_token!r} is not in the vocabulary of the processing class.")
            tokenizer.pad_token = pad_token
            data_collator = DataCollatorForAOT(
                pad_token_id=tokenizer.pad_token_id,
                max_length=args.max_length,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )

        self._recent_rewards: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=_PLOT_STEPS)
        self._card_dataset_name: str | list[str] | None = None
        self._warned_empty_side = False
        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        keep_4bit_trainable(self.model)  # evaluation in the middle of training must not freeze 4-bit CPU layers
        if isinstance(model, str):  # checked through its config only, if that could be read
            check_tokenizer_fits(self.processing_class, self.model)
        sorted_batch = self.sorted_batch_size
        if sorted_batch < MIN_SORTED_BATCH:
            warnings.warn(
                f"AOT sorts batches of {sorted_batch} {'pairs' if args.aot_variant == 'paired' else 'samples'} "
                f"(per_device_train_batch_size={args.per_device_train_batch_size}, "
                f"{self.accelerator.num_processes} process(es), aot_global_sort={args.aot_global_sort}): fewer than "
                f"{MIN_SORTED_BATCH}, the reward quantiles are poorly estimated (at 1, paired AOT is exactly DPO). "
                "Raise the per-device batch size (AOT's authors advise the largest that fits) or sort globally.",
                UserWarning,
                stacklevel=2,
            )

    @staticmethod
    def _load_processing_class(model, args: AOTConfig):
        model_id = model if isinstance(model, str) else get_config_model_id(model.config)
        revision = (args.model_init_kwargs or {}).get("revision") if isinstance(model, str) else None
        return AutoProcessor.from_pretrained(model_id, revision=revision, trust_remote_code=args.trust_remote_code)

    @property
    def sorted_batch_size(self) -> int:
        """How many pairs (paired) or samples (unpaired) each training step sorts."""
        size = self.args.per_device_train_batch_size
        if self.args.aot_global_sort:
            size *= self.accelerator.num_processes
        return size

    # ------------------------------------------------------------------ data

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # As DPOTrainer, rows whose prompt alone fills `max_length` are dropped (no answer token would be left to train
        # on); unlike it, a map-style dataset says how many, and one with no row left is an error.
        prepared = self._tokenize_and_filter(dataset, processing_class, args, dataset_name)
        if isinstance(dataset, Dataset) and isinstance(prepared, Dataset) and len(prepared) < len(dataset):
            _report_dropped_rows(len(dataset) - len(prepared), len(dataset), dataset_name, args)
        return prepared

    def _tokenize_and_filter(self, dataset, processing_class, args, dataset_name):
        if dataset_format(dataset) == "paired":
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if "completion_ids" in _columns(dataset):  # already tokenized
            return dataset
        map_kwargs = {}
        if isinstance(dataset, Dataset):  # IterableDataset does not support num_proc or desc
            map_kwargs["num_proc"] = args.dataset_num_proc
        with global_then_local_main_first():
            if not is_conversational(next(iter(dataset))):
                if isinstance(dataset, Dataset):
                    map_kwargs["desc"] = f"Adding EOS to {dataset_name} dataset"
                dataset = dataset.map(_add_eos, fn_kwargs={"eos_token": self._tokenizer.eos_token}, **map_kwargs)
            if isinstance(dataset, Dataset):
                map_kwargs["desc"] = f"Tokenizing {dataset_name} dataset"
            dataset = dataset.map(_tokenize_unpaired, fn_kwargs={"processing_class": processing_class}, **map_kwargs)
            if args.max_length is not None:
                if isinstance(dataset, Dataset):
                    map_kwargs["desc"] = f"Dropping fully truncated examples from {dataset_name} dataset"
                dataset = dataset.filter(lambda example: len(example["prompt_ids"]) < args.max_length, **map_kwargs)
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                "prompt_ids",
                "chosen_ids",
                "rejected_ids",
                "completion_ids",
                "label",
                "ref_chosen_logps",
                "ref_rejected_logps",
                "ref_logps",
            ]

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        # TRL's version (paired data) writes the log-probabilities to `dataset._get_cache_file_path(fingerprint)` on
        # the main process only; for a dataset held in memory that path is a random file in a per-process temporary
        # directory, so the other ranks cannot read it. Every rank gathers every log-probability anyway, so an
        # in-memory dataset gets them as in-memory columns on every rank, and only a dataset backed by cache files
        # goes through the (then shared, deterministic) cache file.
        if isinstance(dataset, IterableDataset):
            raise ValueError(
                "precompute_ref_log_probs=True is not supported with an IterableDataset; expected a map-style Dataset."
            )
        paired = dataset_format(dataset) == "paired"
        # Rank-dependent inputs (ZeRO-3 shards the model): rank 0's fingerprint names the cache for every rank.
        key = (
            (dataset._fingerprint, self._precompute_model_hash)
            if paired
            else (dataset._fingerprint, self._precompute_model_hash, "aot-unpaired")
        )
        fingerprint = [Hasher.hash(key)]
        broadcast_object_list(fingerprint, from_process=0)
        fingerprint = fingerprint[0]
        cache_file = dataset._get_cache_file_path(fingerprint) if _has_cache_files(dataset) else None
        if cache_file is not None and os.path.exists(cache_file):
            return concatenate_datasets([dataset, Dataset.from_file(cache_file)], axis=1)

        columns = self._compute_ref_logps_columns(dataset, name, batch_size, paired)
        if cache_file is None:
            return concatenate_datasets(
                [dataset, Dataset.from_dict({column: values.numpy() for column, values in columns.items()})], axis=1
            )
        if self.accelerator.is_main_process:
            dataset.map(
                lambda batch, indices: {column: values[indices] for column, values in columns.items()},
                with_indices=True,
                batched=True,
                remove_columns=dataset.column_names,
                new_fingerprint=fingerprint,
                cache_file_name=cache_file,
                desc=f"Caching reference log probs for {name} dataset",
            )
        self.accelerator.wait_for_everyone()
        return concatenate_datasets([dataset, Dataset.from_file(cache_file)], axis=1)

    def _compute_ref_logps_columns(self, dataset: Dataset, name: str, batch_size: int, paired: bool):
        """The reference log-probabilities of every example of `dataset`, on every process (gathered)."""
        loader = self.accelerator.prepare(
            DataLoader(
                dataset,
                batch_size=batch_size,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
                shuffle=False,
            )
        )
        # This runs before `train` prepares the model: under DeepSpeed its parameters are still on the CPU (ZeRO-1/2)
        # or sharded (ZeRO-3). As TRL does, wrap it once in an inference engine that places and gathers them.
        if self.ref_model is None and self.is_deepspeed_enabled:
            if getattr(self, "_precompute_engine", None) is None:
                self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
            model = self._precompute_engine
        else:
            model = self.ref_model if self.ref_model is not None else self.model
        names = ("ref_chosen_logps", "ref_rejected_logps") if paired else ("ref_logps",)
        values = {column: [] for column in names}
        for batch in tqdm(
            iterable=loader,
            desc=f"Computing reference log probs for {name} dataset",
            disable=bool(os.environ.get("TQDM_DISABLE", "")),
        ):
            logps = self.compute_ref_log_probs(model, batch) if paired else (self._live_ref_logps(model, batch),)
            for column, value in zip(names, self.accelerator.gather_for_metrics(tuple(logps))):
                values[column].append(value.float().cpu())
        return {column: torch.cat(chunks) for column, chunks in values.items()}

    # ------------------------------------------------------------------ log-probabilities

    def _live_ref_logps(self, model, inputs) -> torch.Tensor:
        """Summed completion log-probabilities of the reference model, one per sequence of the batch."""
        ref_inputs = {k: v for k, v in inputs.items() if k not in ("label", "ref_logps")}
        # TRL's reference forward (PEFT adapters disabled when there is no reference model); it splits the batch in
        # halves, which are put back together here.
        return torch.cat(self.compute_ref_log_probs(model, ref_inputs))

    def _reference_logps(self, inputs) -> torch.Tensor:
        if self.precompute_ref_logps:
            if "ref_logps" in inputs:
                return inputs["ref_logps"]
            return torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
        return self._live_ref_logps(self.ref_model if self.ref_model is not None else self.model, inputs)

    # ------------------------------------------------------------------ loss

    def aot_loss(
        self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, is_chosen: torch.Tensor, paired: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The AOT loss of a batch, from per-sequence log-probabilities.

        Args:
            policy_logps, ref_logps (`torch.Tensor` of shape `(batch,)`):
                Summed completion log-probabilities under the policy and the reference model.
            is_chosen (`torch.Tensor` of shape `(batch,)`, bool):
                Which sequences are desirable (paired batches: the first half).
            paired (`bool`):
                Whether the batch is `[chosen..., rejected...]` of the same pairs.

        Returns:
            `(loss, u, v)`: the loss and the two samples it compares (`u` should dominate `v`), gathered from every
            process when `aot_global_sort` is set.
        """
        args = self.args
        gather = args.aot_global_sort and self.accelerator.num_processes > 1
        if args.aot_variant == "paired":
            chosen, rejected = policy_logps.chunk(2)
            ref_chosen, ref_rejected = ref_logps.chunk(2)
            u, v = chosen - rejected, (ref_chosen - ref_rejected).detach()
            if gather:
                u, v = gather_across_processes(u), gather_across_processes(v, differentiable=False)
        else:
            rewards = policy_logps - ref_logps.detach()
            if gather:
                rewards = gather_across_processes(rewards)
                is_chosen = gather_across_processes(is_chosen.long(), differentiable=False).bool()
            u, v = rewards[is_chosen], rewards[~is_chosen]
            if (len(u) == 0 or len(v) == 0) and not self._warned_empty_side:
                self._warned_empty_side = True
                logger.warning(
                    f"A batch of {len(u) + len(v)} samples has no {'undesirable' if len(v) == 0 else 'desirable'} "
                    "completion: the dominance is undefined and its AOT loss is 0 (no gradient). Shown once."
                )
        loss = quantile_ot_loss(
            u,
            v,
            cost=args.aot_cost,
            beta=self.beta,
            margin=args.aot_margin,
            label_smoothing=self.label_smoothing,
            soft_sort_temperature=args.aot_soft_sort_temperature,
            check_finite=False,  # checked in `_log_aot_metrics`, within the copy its diagnostics make anyway
        )
        return loss, u, v

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        policy_logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
        ref_logps = self._reference_logps(inputs).to(policy_logps.dtype)

        paired = "label" not in inputs
        if paired:
            is_chosen = torch.arange(policy_logps.shape[0], device=policy_logps.device) < policy_logps.shape[0] // 2
        else:
            is_chosen = inputs["label"].bool()
        loss, u, v = self.aot_loss(policy_logps, ref_logps, is_chosen, paired)

        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())
        self._log_aot_metrics(mode, inputs, outputs, seq_len, policy_logps, ref_logps, is_chosen, paired, u, v)

        if return_outputs:
            warnings.warn(
                "`return_outputs=True`, and the logits it passes to `compute_metrics`, are deprecated in TRL and will "
                "be removed in v2.0.0. The fused LM head does not build the logits, so they are recomputed with an "
                "extra forward pass.",
                FutureWarning,
                stacklevel=2,
            )
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ metrics

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return gather_across_processes(tensor, differentiable=False)

    def _log_aot_metrics(self, mode, inputs, outputs, seq_len, policy_logps, ref_logps, is_chosen, paired, u, v):
        metrics = self._metrics[mode]
        shift_mask = inputs["completion_mask"][..., 1:]

        # Token-level metrics, as DPOTrainer logs them
        entropy = outputs.entropy[:, -seq_len:].detach()
        entropy_sum = self.accelerator.gather_for_metrics((entropy * shift_mask).sum()).sum()
        token_count = self.accelerator.gather_for_metrics(shift_mask.sum()).sum()
        metrics["entropy"].append((entropy_sum / token_count).item() if token_count > 0 else 0.0)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        chosen_rows = is_chosen.unsqueeze(1) & shift_mask.bool()
        is_top1 = outputs.is_top1[:, -seq_len:]
        correct = self.accelerator.gather_for_metrics((is_top1 & chosen_rows).sum()).sum()
        total = self.accelerator.gather_for_metrics(chosen_rows.sum()).sum()
        metrics["mean_token_accuracy"].append((correct / total).item() if total > 0 else 0.0)

        # Rewards and log-probabilities over the global batch
        logps = self._gather(policy_logps.detach())
        rewards = self.beta * (logps - self._gather(ref_logps.detach()))
        chosen = self._gather(is_chosen.long()).bool()
        for side, mask in (("chosen", chosen), ("rejected", ~chosen)):
            if mask.any():
                metrics[f"rewards/{side}"].append(rewards[mask].mean().item())
                metrics[f"logps/{side}"].append(logps[mask].mean().item())
        if paired:
            chosen_rewards, rejected_rewards = self._paired_halves(rewards)
            metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
            metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())

        # Distributional diagnostics of what the loss compares, in reward units (beta * log-ratio)
        u, v = self.beta * u.detach(), self.beta * v.detach()
        try:
            diagnostics = dominance_diagnostics(u, v)
        except ValueError as error:
            raise ValueError(
                f"AOT {mode} step {self.state.global_step}: {error} The policy's or the reference model's "
                "log-probabilities overflowed (a learning rate too high, or half precision without bf16?); the step "
                "is stopped before its update."
            ) from None
        for key, value in diagnostics.items():
            metrics[f"aot/{key}"].append(value)
        if mode == "train" and len(u) and len(v):
            self._recent_rewards.append((u.float().cpu(), v.float().cpu()))

    def _paired_halves(self, gathered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Each process's paired batch is [chosen..., rejected...]; the gathered batch is those blocks in rank order.
        blocks = gathered.chunk(self.accelerator.num_processes) if self.accelerator.num_processes > 1 else (gathered,)
        halves = [block.chunk(2) for block in blocks]
        return torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])

    # ------------------------------------------------------------------ saving, plots and cards

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model as `Trainer.save_model` does, plus the AOT model card (`README.md`) and the
        reward-quantile plot (`aot_reward_quantiles.png`, also logged through `report_to`)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.is_world_process_zero():
            self._write_reward_plot(output_dir)
            self._write_card(output_dir)

    def _write_reward_plot(self, output_dir: str) -> Path | None:
        if not self._recent_rewards:
            return None
        from .plots import log_image, plot_reward_quantiles

        u = torch.cat([pair[0] for pair in self._recent_rewards])
        v = torch.cat([pair[1] for pair in self._recent_rewards])
        if self.args.aot_variant == "paired":
            labels = ("policy margins", "reference margins")
        else:
            labels = ("desirable rewards", "undesirable rewards")
        path = plot_reward_quantiles(
            Path(output_dir) / PLOT_FILE,
            u,
            v,
            labels=labels,
            title=f"AOT reward quantiles, last {len(self._recent_rewards)} steps (step {self.state.global_step})",
        )
        log_image(self.callback_handler.callbacks, "aot/reward_quantiles", path, self.state.global_step)
        return path

    def aot_card_config(self) -> dict:
        """The AOT configuration recorded in the model card."""
        args = self.args
        return {
            "aot_variant": args.aot_variant,
            "aot_cost": args.aot_cost,
            "beta": args.beta,
            "aot_margin": args.aot_margin,
            "label_smoothing": args.label_smoothing,
            "aot_soft_sort_temperature": args.aot_soft_sort_temperature,
            "aot_global_sort": args.aot_global_sort,
            "sorted_batch_size": self.sorted_batch_size,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "learning_rate": args.learning_rate,
            "max_length": args.max_length,
            "precompute_ref_log_probs": args.precompute_ref_log_probs,
            "num_processes": self.accelerator.num_processes,
        }

    def _write_card(self, output_dir: str, model_name: str | None = None, tags=None) -> None:
        from ..hub import make_card, save_card

        base = get_config_model_id(self.model.config)
        base_model = base if base and not os.path.isdir(base) else None
        config = self.aot_card_config()
        variant = (
            "paired (the policy's log-ratio margins dominate the reference model's)"
            if config["aot_variant"] == "paired"
            else "unpaired (rewards of desirable completions dominate those of undesirable ones)"
        )
        name = model_name or Path(output_dir).name
        card = make_card(
            "aot",
            method="aot",
            base_model=base_model,
            datasets=self._card_dataset_name,
            tags=[*self._tag_names, *(tags or [])],
            method_config=config,
            title=name,
            summary=(
                f"This model is {'a fine-tuned version of [' + base_model + '](https://huggingface.co/' + base_model + ')' if base_model else 'fine-tuned'}"
                f"{' on ' + _dataset_text(self._card_dataset_name) if self._card_dataset_name else ''} with AOT, "
                "alignment via optimal transport."
            ),
            variant=variant,
            cost=config["aot_cost"],
            plot=PLOT_FILE if (Path(output_dir) / PLOT_FILE).exists() else None,
            repo_id=self.hub_model_id or name,
            citation=self._paper["citation"],
        )
        save_card(card, output_dir)

    def create_model_card(self, model_name: str | None = None, dataset_name=None, tags=None):
        """Write the AOT model card (`model_cards/aot.md`) to `args.output_dir/README.md`.

        `dataset_name` is remembered and written in every later card (checkpoints and saves too).
        """
        if dataset_name is not None:
            self._card_dataset_name = dataset_name
        if not self.is_world_process_zero():
            return
        os.makedirs(self.args.output_dir, exist_ok=True)
        self._write_card(self.args.output_dir, model_name=model_name, tags=[tags] if isinstance(tags, str) else tags)


def _report_dropped_rows(dropped: int, total: int, dataset_name: str, args: AOTConfig) -> None:
    """Rows dropped because their prompt alone fills `max_length`: a warning that counts them, or an error when no
    row is left."""
    why = (
        f"their prompt alone has max_length={args.max_length} tokens or more, so no token of their answers would be "
        "trained on (AOT truncates sequences at the end, truncation_mode='keep_start')"
    )
    fix = (
        "Raise max_length (AOTConfig(max_length=...), --max_length; None keeps every row whole) or shorten the prompts"
    )
    if dropped == total:
        raise ValueError(
            f"Every one of the {total} rows of the {dataset_name} dataset would be dropped: {why}. {fix}."
        )
    if args.process_index == 0:  # every process prepares its own copy; one warning is enough
        warnings.warn(
            f"{dropped} of {total} rows of the {dataset_name} dataset were dropped: {why}. {fix} to keep them.",
            UserWarning,
            stacklevel=2,
        )


def _check_vocabularies(model, ref_model, processing_class, args: AOTConfig) -> None:
    """Before anything is tokenized or loaded: every token id of the processing class must be embedded by the policy
    and by the reference model (a model given by name is checked through its config)."""
    if isinstance(model, str):
        init_kwargs = args.model_init_kwargs or {}
        try:
            config = AutoConfig.from_pretrained(
                model, revision=init_kwargs.get("revision"), trust_remote_code=args.trust_remote_code
            )
        except (OSError, ValueError):  # e.g. a PEFT adapter folder: the loaded model is checked after loading
            return
        rows = getattr(config.get_text_config(), "vocab_size", None)
        if rows is not None:
            check_tokenizer_fits(processing_class, model, rows=rows)
    else:
        check_tokenizer_fits(processing_class, model)
    if isinstance(ref_model, torch.nn.Module):
        check_tokenizer_fits(processing_class, ref_model, model_name="ref_model")


def _dataset_text(datasets) -> str:
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    return ", ".join(f"[{n}](https://huggingface.co/datasets/{n})" for n in names)


def _has_cache_files(dataset: Dataset) -> bool:
    """Whether `dataset` lives in cache files (then `_get_cache_file_path` is the same on every process)."""
    return is_caching_enabled() and bool(dataset.cache_files)


def _columns(dataset) -> list[str]:
    names = getattr(dataset, "column_names", None)
    return list(names) if names is not None else list(next(iter(dataset)).keys())


def _add_eos(example, eos_token):
    if not example["completion"].endswith(eos_token):
        example["completion"] = example["completion"] + eos_token
    return example


def _tokenize_unpaired(example, processing_class: PreTrainedTokenizerBase | ProcessorMixin):
    tools = example.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    template_kwargs = {"tools": tools, **(example.get("chat_template_kwargs") or {})}
    if is_conversational(example):
        prompt_ids = _tokenize(processing_class, example["prompt"], add_generation_prompt=True, **template_kwargs)
        full_ids = _tokenize(processing_class, example["prompt"] + example["completion"], **template_kwargs)
    else:
        prompt_ids = _tokenize(processing_class, example["prompt"])
        full_ids = _tokenize(processing_class, example["prompt"] + example["completion"])
    prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
    # The completion starts where the tokenized prompt and prompt + completion diverge (see `common_prefix_length`)
    prompt_len = common_prefix_length(prompt_ids, full_ids)
    return {"prompt_ids": prompt_ids[:prompt_len], "completion_ids": full_ids[prompt_len:]}
