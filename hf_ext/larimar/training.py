"""Training Larimar with `transformers.Trainer`: an episode collator and the KL annealing of the paper."""

from __future__ import annotations

from transformers import TrainerCallback

from .._validation import check_range


__all__ = [
    "LarimarEpisodeCollator",
    "LarimarKLAnnealingCallback",
    "freeze_all_but_addressing",
    "kl_annealing_scale",
    "warmup_linear_decay",
]


class LarimarEpisodeCollator:
    """Turns a list of examples into one Larimar training batch (see [`LarimarProcessor.episode`]).

    Each batch is written into memory as `len(features) / episode_size` episodes (one episode by default), so give
    the `Trainer` batches of whole episodes (`per_device_train_batch_size` a multiple of `episode_size`) and set
    `remove_unused_columns=False` (the collator reads the raw text columns).

    Args:
        processor ([`LarimarProcessor`]): Tokenizes for the encoder and the decoder.
        text_field (`str`, *optional*, defaults to `"text"`): The column with the texts to memorise and decode.
        prompt_field (`str`, *optional*, defaults to `"prompt"`): The column with each text's prompt (what a user
            will ask); enables the query term of the objective. Ignored when absent.
        episode_size (`int`, *optional*): Items per episode; the whole batch by default.
        max_length (`int`, *optional*): Truncate longer texts.
        model ([`LarimarForCausalLM`], *optional*): The model the batches are for; when given, the processor's
            tokenizers are checked against its encoder's and decoder's embeddings here, before the first step
            ([`LarimarProcessor.check_model`]).
    """

    def __init__(
        self,
        processor,
        text_field: str = "text",
        prompt_field: str | None = "prompt",
        episode_size: int | None = None,
        max_length: int | None = None,
        model=None,
    ):
        if episode_size is not None:
            check_range("episode_size", episode_size, ge=1, integer=True)
        check_range("max_length", max_length, ge=1, integer=True, optional=True)
        if model is not None:
            processor.check_model(model)
        self.processor = processor
        self.text_field = text_field
        self.prompt_field = prompt_field
        self.episode_size = episode_size
        self.max_length = max_length

    def __call__(self, features: list[dict]) -> dict:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        missing = [i for i, f in enumerate(features) if self.text_field not in f]
        if missing:
            raise KeyError(f"Examples {missing[:5]} have no {self.text_field!r} field.")
        texts = [f[self.text_field] for f in features]
        prompts = None
        if self.prompt_field and all(self.prompt_field in f for f in features):
            prompts = [f[self.prompt_field] for f in features]
        batch = dict(self.processor.episode(texts, prompts, max_length=self.max_length))
        if self.episode_size is not None:
            if len(features) % self.episode_size:
                raise ValueError(
                    f"A batch of {len(features)} examples does not split into episodes of {self.episode_size}."
                )
            batch["episode_size"] = self.episode_size
        return batch


def kl_annealing_scale(step: int, total_steps: int, zero_ratio: float = 0.5, increase_ratio: float = 0.25) -> float:
    """The paper's (and Optimus') schedule for the KL weight: 0 for the first `zero_ratio` of training, then a
    linear ramp to 1 over `increase_ratio`, then 1."""
    if total_steps <= 0:
        return 1.0
    progress = step / total_steps
    if progress < zero_ratio:
        return 0.0
    if increase_ratio <= 0:
        return 1.0
    return min(1.0, (progress - zero_ratio) / increase_ratio)


class LarimarKLAnnealingCallback(TrainerCallback):
    """Anneals the KL term of Larimar's objective ([`kl_annealing_scale`]) during `Trainer.train()`."""

    def __init__(self, zero_ratio: float = 0.5, increase_ratio: float = 0.25):
        self.zero_ratio = zero_ratio
        self.increase_ratio = increase_ratio

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        scale = kl_annealing_scale(state.global_step, state.max_steps, self.zero_ratio, self.increase_ratio)
        target = _unwrap(model)
        if hasattr(target, "kl_scale"):
            target.kl_scale = scale


def warmup_linear_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor of the offline Larimar recipes: linear warm-up over `warmup_steps` (reaching 1 at the
    last warm-up step), then linear decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def _unwrap(model):
    # accelerate / DDP wrappers and PEFT models keep the Larimar model underneath.
    while True:
        if hasattr(model, "kl_scale"):
            return model
        for attribute in ("module", "base_model", "model"):
            inner = getattr(model, attribute, None)
            if inner is not None and inner is not model:
                model = inner
                break
        else:
            return model


def freeze_all_but_addressing(model, *, train_encoder: bool = False) -> list:
    """Make only what the `memory_readout="text"` objective trains require gradients: the latent projection, and
    the encoder with `train_encoder`. Every other parameter would get no gradient (DDP refuses those unless
    `find_unused_parameters`). Returns the trainable parameters."""
    larimar = model.model if hasattr(model, "model") else model
    model.requires_grad_(False)
    larimar.latent_projection.requires_grad_(True)
    if train_encoder:
        larimar.encoder.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]
