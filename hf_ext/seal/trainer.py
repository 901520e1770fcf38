"""[`SEALTrainer`]: a `transformers.Trainer` that fine-tunes a model while it learns a ranker over the data."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, Trainer

from .._checks import (
    check_chat_messages,
    check_loading_info,
    check_no_empty_texts,
    check_no_missing_values,
    check_tokenizer_fits,
)
from ..quantization import keep_4bit_trainable
from ..serialization import load_json, load_tensors, save_json, save_tensors
from .config import SEALConfig
from .data import detect_format, format_fields, hash_batch, tokenize_example
from .filtering import SEALScores, seal_filter
from .ranking import example_weights, initial_logits, ranker_objective, sequence_losses, upper_level_weight


__all__ = ["SEALTrainer"]

RANKER_TENSORS = "seal_ranker.safetensors"
RANKER_STATE = "seal_ranker.json"


class SEALDataCollator:
    """Pads tokenized examples (right padding) into `input_ids`, `attention_mask`, `completion_mask` and, when the
    rows have one, `seal_index` (the example's ranker logit)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(row["input_ids"]) for row in rows)
        batch = {
            "input_ids": torch.full((len(rows), length), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
            "completion_mask": torch.zeros((len(rows), length), dtype=torch.long),
        }
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            batch["input_ids"][i, :n] = torch.as_tensor(row["input_ids"])
            batch["attention_mask"][i, :n] = 1
            batch["completion_mask"][i, :n] = torch.as_tensor(row["completion_mask"])
        if "seal_index" in rows[0]:
            batch["seal_index"] = torch.tensor([row["seal_index"] for row in rows], dtype=torch.long)
        return batch


def _pad_to(tensor: torch.Tensor, length: int, value: int) -> torch.Tensor:
    if tensor.size(1) == length:
        return tensor
    return torch.nn.functional.pad(tensor, (0, length - tensor.size(1)), value=value)


class SEALTrainer(Trainer):
    r"""
    Trainer for SEAL (Shen et al., "SEAL: Safety-enhanced Aligned LLM Fine-tuning via Bilevel Data Selection",
    ICLR 2025): fine-tunes `model` on `train_dataset` while learning one logit ω_i per fine-tuning example, such
    that the examples that pull the model away from `safe_dataset` get low scores.

    Every step takes a fine-tuning batch B and a safe batch S (the safe set cycles, so a small one never ends an
    epoch early) and

    1. updates the model on `λ · mean_{S} ℓ + (1 - λ) · mean_{i ∈ B} σ_i(ω) ℓ_i` (σ: see `SEALConfig.weighting`);
    2. updates the ranker on `mean_{i ∈ B} σ_i(ω) · ℓ_i` with the losses detached (or on the excess loss over an
       auxiliary adapter, `algorithm="full"`);
    3. λ starts at `upper_level_weight` and drops by `upper_level_weight_decay` every epoch.

    ℓ_i is the token-mean causal-LM loss of example i on its completion: prompts are masked through the tokenizer's
    chat template (conversational data), or by the prompt's length (prompt-completion data).

    Examples are identified by their content (a hash of their `messages`, `prompt` + `completion` or `text`), so
    rows with the same content are one example: they share one logit and one score (a warning says how many
    duplicate rows were merged), and [`SEALScores`] holds one entry per distinct example.

    The ranker's logits and optimiser state are saved in every checkpoint (`seal_ranker.safetensors` +
    `seal_ranker.json`) and restored by `train(resume_from_checkpoint=...)`, so a resumed run gives the same
    scores as an uninterrupted one. Under `accelerate launch`, each rank computes the losses of its share of the
    batch; they are gathered, so every example's loss reaches the ranker once per step, and every rank applies the
    same update.

    Args:
        model (`str` or `PreTrainedModel`):
            The model, or its name / path (loaded with `AutoModelForCausalLM` and `args.model_init_kwargs`; weights
            its config needs and the checkpoint lacks are an error, not a random start). A 4-bit / 8-bit model
            (`hf_ext.quantization.load_quantized`) needs a `peft_config` (QLoRA).
        args ([`SEALConfig`], *optional*): The configuration.
        train_dataset (`datasets.Dataset`):
            The fine-tuning set to rank: a `messages`, `prompt` + `completion`, or `text` column.
        safe_dataset (`datasets.Dataset`): The safe / aligned reference set, in any of the same formats.
        processing_class (`PreTrainedTokenizerBase`, *optional*): The tokenizer; loaded from the model by default.
        peft_config (`peft.PeftConfig`, *optional*): Train a PEFT adapter (LoRA, QLoRA) instead of the full model.
        data_collator, callbacks, optimizers: As for `transformers.Trainer`.

    Example:

    ```python
    >>> from hf_ext.seal import SEALConfig, SEALTrainer, seal_filter
    >>> trainer = SEALTrainer("HuggingFaceTB/SmolLM2-135M-Instruct", args=SEALConfig("out"), train_dataset=ft, safe_dataset=safe)
    >>> trainer.train()
    >>> kept = seal_filter(ft, trainer.scores(), keep_ratio=0.8)
    ```
    """

    _tag_names = ["hf-ext", "seal"]

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: SEALConfig | None = None,
        train_dataset=None,
        safe_dataset=None,
        processing_class=None,
        peft_config=None,
        data_collator=None,
        callbacks=None,
        optimizers=(None, None),
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = SEALConfig(f"{str(name).split('/')[-1]}-SEAL")
        elif not isinstance(args, SEALConfig):
            raise TypeError(f"args must be a SEALConfig, got {type(args).__name__}.")

        # Cheap checks first: nothing is loaded or tokenized before the inputs are known to be usable.
        train_format = self._check_dataset(train_dataset, "train_dataset")
        safe_format = self._check_dataset(safe_dataset, "safe_dataset")
        if args.algorithm == "full" and peft_config is None and not _is_peft_model(model):
            raise ValueError(
                "algorithm='full' keeps the auxiliary model as a second LoRA adapter: pass a peft_config (or a PEFT "
                "model)."
            )

        if args.algorithm == "full":
            # The auxiliary adapter's forward is not the DDP-wrapped forward: with `find_unused_parameters=True`, DDP
            # marks that adapter unused (ready) after the wrapped forward, then its gradient arrives in the same
            # backward and DDP fails ("Expected to mark a variable ready only once"). Every trainable parameter, both
            # adapters, gets exactly one gradient from the summed loss, so DDP need not look for unused ones.
            if args.ddp_find_unused_parameters:
                raise ValueError(
                    "ddp_find_unused_parameters=True is not supported with algorithm='full' (the auxiliary adapter "
                    "runs in a second forward that DDP does not see); expected None or False."
                )
            args.ddp_find_unused_parameters = False

        model_id = model if isinstance(model, str) else None
        if isinstance(model, str):
            model, loading_info = AutoModelForCausalLM.from_pretrained(
                model, **{**(args.model_init_kwargs or {}), "output_loading_info": True}
            )
            check_loading_info(loading_info, model_id, type(model).__name__)  # no weight starts at random silently
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model_id or model.config._name_or_path)
        if processing_class.pad_token_id is None:
            processing_class.pad_token = processing_class.eos_token
        check_tokenizer_fits(processing_class, model)
        model = self._prepare_peft_model(model, peft_config, args)
        keep_4bit_trainable(model)  # evaluation in the middle of training must not freeze 4-bit CPU layers

        self.train_format = train_format
        self.safe_format = safe_format
        self._raw_train_dataset = train_dataset
        processed_train, self._hashes = self._prepare_train_dataset(train_dataset, processing_class, args)
        self._safe_rows = self._prepare_safe_dataset(safe_dataset, processing_class, args)
        self._check_targets(processed_train, self._safe_rows)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or SEALDataCollator(processing_class.pad_token_id),
            train_dataset=processed_train,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.loss_is_scaled_for_ga = False
        self._safe_collator = SEALDataCollator(processing_class.pad_token_id)

        self.ranker_logits = torch.nn.Parameter(
            initial_logits(len(self._hashes), args.weighting, device=self.args.device)
        )
        if args.ranker_optimizer == "adam":
            self.ranker_optimizer = torch.optim.Adam(
                [self.ranker_logits],
                lr=args.ranker_learning_rate,
                betas=(args.ranker_adam_beta1, args.ranker_adam_beta2),
                weight_decay=0.0,
            )
        else:
            self.ranker_optimizer = torch.optim.SGD([self.ranker_logits], lr=args.ranker_learning_rate)
        self._safe_cursor = 0
        self._ranker_steps = 0
        self._ranker_buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self._metrics: dict[str, list[float]] = defaultdict(list)

    # -- set-up --------------------------------------------------------------------------------------------------------

    @staticmethod
    def _check_dataset(dataset, name: str) -> str:
        from datasets import Dataset, IterableDataset

        if dataset is None:
            raise ValueError(f"{name} is required.")
        if isinstance(dataset, IterableDataset):
            raise ValueError(
                f"{name} is an IterableDataset; the ranker needs one logit per example, so pass a map-style Dataset "
                "(seal_filter works on streams once the scores exist)."
            )
        if not isinstance(dataset, Dataset):
            raise ValueError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}.")
        if len(dataset) == 0:
            raise ValueError(f"{name} is empty; SEAL needs at least one example in it.")
        try:
            data_format = detect_format(dataset.column_names)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        fields = format_fields(data_format)
        check_no_missing_values(dataset, fields, name)
        check_chat_messages(dataset, fields, name)
        check_no_empty_texts(dataset, fields[-1:], name, last_message=True)  # the text, completion or answer learned
        return data_format

    @staticmethod
    def _prepare_peft_model(model, peft_config, args: SEALConfig):
        is_quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if peft_config is None:
            if is_quantized and not _is_peft_model(model):
                raise ValueError(
                    "A 4-bit / 8-bit model can only be trained with adapters: pass a peft_config (QLoRA)."
                )
        else:
            from peft import get_peft_model

            from ..quantization import prepare_for_kbit_training

            if _is_peft_model(model):
                raise ValueError("The model is already a PEFT model: pass it without a peft_config.")
            if is_quantized:
                model = prepare_for_kbit_training(model, gradient_checkpointing=args.gradient_checkpointing)
            model = get_peft_model(model, peft_config)
        if args.algorithm == "full":
            aux = args.aux_adapter_name
            if aux in model.peft_config:
                raise ValueError(f"aux_adapter_name={aux!r} is already an adapter of the model; choose another name.")
            main = model.active_adapter
            model.add_adapter(aux, model.peft_config[main])
            model.set_adapter(main)
            model.set_requires_grad([main, aux], requires_grad=True)
        return model

    def _prepare_train_dataset(self, dataset, tokenizer, args: SEALConfig):
        fields = format_fields(self.train_format)
        hashed = dataset.map(
            lambda *columns: {"seal_hash": hash_batch(dict(zip(fields, columns)), fields)},
            input_columns=list(fields),
            batched=True,
            num_proc=args.dataset_num_proc,
            desc="SEAL: hashing the fine-tuning set",
        )
        hashes: list[str] = []
        index_of: dict[str, int] = {}
        for h in hashed["seal_hash"]:
            if h not in index_of:
                index_of[h] = len(hashes)
                hashes.append(h)
        duplicates = len(hashed) - len(hashes)
        if duplicates:
            warnings.warn(
                f"train_dataset has {len(hashed)} rows but {len(hashes)} distinct examples: {duplicates} duplicate "
                f"row(s) were merged with the first row of the same content ({', '.join(fields)}). SEAL learns one "
                "logit per distinct example, so copies share one score. Deduplicate the dataset first to silence this.",
                UserWarning,
                stacklevel=3,
            )
        data_format, max_length = self.train_format, args.max_length

        def tokenize(example):
            out = tokenize_example(example, tokenizer, data_format, max_length)
            out["seal_index"] = index_of[example["seal_hash"]]
            return out

        processed = hashed.map(
            tokenize,
            remove_columns=hashed.column_names,
            num_proc=args.dataset_num_proc,
            desc="SEAL: tokenizing the fine-tuning set",
        )
        return processed, hashes

    def _prepare_safe_dataset(self, dataset, tokenizer, args: SEALConfig) -> list[dict]:
        data_format, max_length = self.safe_format, args.max_length
        processed = dataset.map(
            lambda example: tokenize_example(example, tokenizer, data_format, max_length),
            remove_columns=dataset.column_names,
            num_proc=args.dataset_num_proc,
            desc="SEAL: tokenizing the safe set",
        )
        return [{"input_ids": r["input_ids"], "completion_mask": r["completion_mask"]} for r in processed]

    @staticmethod
    def _check_targets(processed_train, safe_rows) -> None:
        if not any(any(row["completion_mask"]) for row in safe_rows):
            raise ValueError("No safe example has a completion token to learn (check max_length and the format).")
        empty = sum(1 for mask in processed_train["completion_mask"] if not any(mask))
        if empty:
            warnings.warn(
                f"{empty} fine-tuning example(s) have no completion token within max_length; their scores stay at "
                "the initial value.",
                UserWarning,
                stacklevel=3,
            )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "completion_mask", "seal_index"]

    # -- training ------------------------------------------------------------------------------------------------------

    @property
    def safe_batch_size(self) -> int:
        return self.args.safe_batch_size or self.args.per_device_train_batch_size

    def _next_safe_batch(self) -> dict[str, torch.Tensor]:
        """This rank's share of the next safe batch of the cycling stream (a pure function of the cursor)."""
        from .ranking import cycling_indices

        size, world = self.safe_batch_size, self.args.world_size
        start = self._safe_cursor + self.args.process_index * size
        indices = cycling_indices(len(self._safe_rows), start, size, seed=self.args.seed)
        self._safe_cursor += size * world
        return self._safe_collator([self._safe_rows[i] for i in indices])

    def current_upper_level_weight(self) -> float:
        """λ at the current epoch."""
        return upper_level_weight(
            self.args.upper_level_weight, self.args.upper_level_weight_decay, self.state.epoch or 0
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        indices = inputs["seal_index"]
        ft_ids, ft_attention, ft_mask = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
        batch_size = ft_ids.size(0)
        lam = self.current_upper_level_weight()
        device = ft_ids.device

        safe = {k: v.to(device) for k, v in self._next_safe_batch().items()}
        length = max(ft_ids.size(1), safe["input_ids"].size(1))
        pad_id = self.processing_class.pad_token_id
        input_ids = torch.cat([_pad_to(ft_ids, length, pad_id), _pad_to(safe["input_ids"], length, pad_id)])
        attention_mask = torch.cat([_pad_to(ft_attention, length, 0), _pad_to(safe["attention_mask"], length, 0)])
        loss_mask = torch.cat([_pad_to(ft_mask, length, 0), _pad_to(safe["completion_mask"], length, 0)])

        outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        losses, counts = sequence_losses(outputs.logits, input_ids, loss_mask)
        ft_losses, safe_losses = losses[:batch_size], losses[batch_size:]
        valid = counts[:batch_size] > 0
        safe_valid = counts[batch_size:] > 0

        weights = example_weights(self.ranker_logits.detach(), self.args.weighting)[indices].to(ft_losses.dtype)
        lower = (weights * ft_losses * valid).sum() / batch_size
        upper = (safe_losses * safe_valid).sum() / safe_valid.sum().clamp(min=1)
        loss = lam * upper + (1.0 - lam) * lower

        reference = None
        if self.args.algorithm == "full":
            aux_losses = self._auxiliary_losses(model, ft_ids, ft_attention, ft_mask)
            loss = loss + (weights * aux_losses * valid).sum() / batch_size
            reference = aux_losses.detach()[valid]
            self._metrics["aux_loss"].append(float(aux_losses.detach()[valid].mean()) if valid.any() else 0.0)

        self._ranker_buffer.append((indices[valid], ft_losses.detach()[valid], reference))
        self._metrics["safe_loss"].append(float(upper.detach()))
        self._metrics["finetune_loss"].append(float(ft_losses.detach()[valid].mean()) if valid.any() else 0.0)
        self._metrics["upper_level_weight"].append(lam)
        return (loss, outputs) if return_outputs else loss

    def _auxiliary_losses(self, model, input_ids, attention_mask, loss_mask) -> torch.Tensor:
        """ℓ_i(θ̂): the losses under the auxiliary adapter, which trains on the weighted fine-tuning loss alone."""
        peft_model = self.accelerator.unwrap_model(model)
        main, aux = peft_model.active_adapter, self.args.aux_adapter_name
        try:
            peft_model.set_adapter(aux)
            peft_model.set_requires_grad([main, aux], requires_grad=True)
            logits = peft_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        finally:
            peft_model.set_adapter(main)
            peft_model.set_requires_grad([main, aux], requires_grad=True)
        losses, _ = sequence_losses(logits, input_ids, loss_mask)
        return losses

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self._ranker_step()
        return loss

    def _gather(self, tensor: torch.Tensor, pad_value) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        padded = self.accelerator.pad_across_processes(tensor, dim=0, pad_index=pad_value)
        return self.accelerator.gather(padded)

    def _ranker_step(self) -> None:
        """One ranker update on every example of the (global) batch: the losses of all micro-batches and ranks are
        gathered, each example counted once, and every rank applies the same update."""
        if not self._ranker_buffer:
            return
        device = self.ranker_logits.device
        indices = torch.cat([b[0] for b in self._ranker_buffer]).to(device)
        losses = torch.cat([b[1] for b in self._ranker_buffer]).to(device, torch.float32)
        full = self._ranker_buffer[0][2] is not None
        reference = torch.cat([b[2] for b in self._ranker_buffer]).to(device, torch.float32) if full else None
        self._ranker_buffer = []

        indices = self._gather(indices, -1)
        losses = self._gather(losses, 0.0)
        if reference is not None:
            reference = self._gather(reference, 0.0)
        keep = indices >= 0
        indices, losses = indices[keep], losses[keep]
        reference = reference[keep] if reference is not None else None
        # Each example once (even_batches may repeat examples to fill the last batch): keep first occurrences.
        first = _first_occurrences(indices)
        indices, losses = indices[first], losses[first]
        reference = reference[first] if reference is not None else None

        self.ranker_optimizer.zero_grad(set_to_none=True)
        objective = ranker_objective(self.ranker_logits, indices, losses, self.args.weighting, reference)
        objective.backward()
        self.ranker_optimizer.step()
        self._ranker_steps += 1
        self._metrics["ranker_objective"].append(float(objective.detach()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._metrics:
            for key, values in self._metrics.items():
                if values:
                    logs[key] = sum(values) / len(values)
            logits = self.ranker_logits.detach().float()
            logs["ranker_logit_std"] = float(logits.std()) if logits.numel() > 1 else 0.0
            self._metrics.clear()
        super().log(logs, start_time)

    # -- checkpoints ---------------------------------------------------------------------------------------------------

    def _ranker_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {"logits": self.ranker_logits.detach().cpu()}
        state = self.ranker_optimizer.state.get(self.ranker_logits, {})
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{key}"] = value.detach().cpu().reshape(value.shape)
        info = {
            "safe_cursor": self._safe_cursor,
            "ranker_steps": self._ranker_steps,
            "num_examples": len(self._hashes),
            "hashes_digest": SEALScores(
                self._hashes, torch.zeros(len(self._hashes)), hash_fields=self._hash_fields
            ).digest(),
            "optimizer_keys": sorted(k for k, v in state.items() if torch.is_tensor(v)),
            "optimizer_scalars": {k: v for k, v in state.items() if isinstance(v, (int, float))},
        }
        return tensors, info

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            tensors, info = self._ranker_state()
            save_tensors(Path(output_dir) / RANKER_TENSORS, tensors)
            save_json(Path(output_dir) / RANKER_STATE, info)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = Path(checkpoint) / RANKER_TENSORS
        if not path.exists():
            raise ValueError(f"{checkpoint} has no {RANKER_TENSORS}: it was not written by SEALTrainer.")
        tensors = load_tensors(path)
        info = load_json(Path(checkpoint) / RANKER_STATE)
        _, current = self._ranker_state()
        if info["num_examples"] != len(self._hashes) or info["hashes_digest"] != current["hashes_digest"]:
            raise ValueError(f"{checkpoint} ranks another fine-tuning set ({info['num_examples']} examples).")
        with torch.no_grad():
            self.ranker_logits.copy_(tensors["logits"].to(self.ranker_logits.device))
        state = {}
        for key in info["optimizer_keys"]:
            state[key] = tensors[f"optimizer.{key}"].to(self.ranker_logits.device)
        state.update(info["optimizer_scalars"])
        if state:
            self.ranker_optimizer.state[self.ranker_logits] = state
        self._safe_cursor = int(info["safe_cursor"])
        self._ranker_steps = int(info["ranker_steps"])

    # -- results -------------------------------------------------------------------------------------------------------

    @property
    def _hash_fields(self) -> tuple[str, ...]:
        return format_fields(self.train_format)

    def scores(self) -> SEALScores:
        """The ranker's scores (its logits ω: higher means safer to keep), keyed by content hash."""
        base_model = getattr(getattr(self.accelerator.unwrap_model(self.model), "config", None), "_name_or_path", None)
        metadata = {
            "keep_ratio": self.args.keep_ratio,
            "weighting": self.args.weighting,
            "algorithm": self.args.algorithm,
            "ranker_optimizer": self.args.ranker_optimizer,
            "ranker_learning_rate": self.args.ranker_learning_rate,
            "upper_level_weight": self.args.upper_level_weight,
            "upper_level_weight_decay": self.args.upper_level_weight_decay,
            "num_train_epochs": self.args.num_train_epochs,
            "ranker_steps": self._ranker_steps,
            "safe_dataset_name": self.args.safe_dataset_name,
            "safe_dataset_size": len(self._safe_rows),
            "base_model": os.path.basename(str(base_model)) if base_model else None,
        }
        return SEALScores(
            self._hashes, self.ranker_logits.detach().cpu(), hash_fields=self._hash_fields, metadata=metadata
        )

    def filter(self, dataset=None, keep_ratio: float | None = None, **kwargs):
        """[`seal_filter`] with this trainer's scores: `dataset` defaults to the training set, `keep_ratio` to
        `args.keep_ratio`."""
        dataset = self._raw_train_dataset if dataset is None else dataset
        return seal_filter(
            dataset, self.scores(), self.args.keep_ratio if keep_ratio is None else keep_ratio, **kwargs
        )


def _is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a core dependency
        return False
    return isinstance(model, PeftModel)


def _first_occurrences(indices: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each value of `indices`, in order."""
    if indices.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=indices.device)
    seen: set[int] = set()
    positions = []
    for position, value in enumerate(indices.tolist()):
        if value not in seen:
            seen.add(value)
            positions.append(position)
    return torch.tensor(positions, dtype=torch.long, device=indices.device)
