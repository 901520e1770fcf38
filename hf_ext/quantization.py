"""Loading causal LMs in 4-bit or 8-bit with bitsandbytes, on CPU or CUDA, ready for QLoRA.

```python
>>> from peft import LoraConfig, get_peft_model
>>> from hf_ext.quantization import load_quantized
>>> model = load_quantized("HuggingFaceTB/SmolLM2-135M-Instruct", bits=4, prepare_for_training=True)
>>> model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
```

The same call works on a laptop CPU (bitsandbytes >= 0.48 runs NF4 and LLM.int8 there) and on a GPU: only the
defaults differ (float32 compute on CPU; bfloat16 on CUDA when the card supports it, else float16).
"""

from __future__ import annotations

import os

import torch

from ._compat import enable_activation_checkpointing


__all__ = [
    "bnb_config",
    "default_compute_dtype",
    "keep_4bit_trainable",
    "load_quantized",
    "prepare_for_kbit_training",
    "will_be_sharded",
]


def default_compute_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The dtype 4-bit layers compute in: bfloat16 on CUDA when supported, float16 on older CUDA, else float32."""
    device = torch.device(device) if device is not None else _default_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def bnb_config(
    bits: int = 4,
    *,
    compute_dtype: torch.dtype | None = None,
    quant_type: str = "nf4",
    double_quant: bool = True,
    device: str | torch.device | None = None,
    quant_storage: torch.dtype | None = None,
    **kwargs,
):
    """A `BitsAndBytesConfig` for `bits` (4 or 8) with defaults that work on both CPU and CUDA.

    Args:
        bits (`int`, *optional*, defaults to 4):
            4 (NF4 / FP4 weights) or 8 (LLM.int8).
        compute_dtype (`torch.dtype`, *optional*):
            Dtype of the 4-bit matmuls; [`default_compute_dtype`] of `device` by default.
        quant_type (`str`, *optional*, defaults to `"nf4"`):
            `"nf4"` or `"fp4"` (4-bit only).
        double_quant (`bool`, *optional*, defaults to `True`):
            Quantize the quantization constants too (4-bit only).
        device (`str` or `torch.device`, *optional*):
            Where the model will run; CUDA when available by default.
        quant_storage (`torch.dtype`, *optional*):
            Dtype the packed 4-bit weights are stored in (`bnb_4bit_quant_storage`; bitsandbytes' `uint8` by
            default). FSDP and DeepSpeed ZeRO-3 flatten and shard a 4-bit model only when it equals the dtype of the
            other parameters (QLoRA under FSDP / ZeRO-3: the compute dtype).
        kwargs:
            Passed on to `BitsAndBytesConfig`.
    """
    from transformers import BitsAndBytesConfig

    if bits == 4:
        if quant_type not in ("nf4", "fp4"):
            raise ValueError(f"quant_type={quant_type!r} is not supported; expected 'nf4' or 'fp4'.")
        if quant_storage is not None:
            kwargs["bnb_4bit_quant_storage"] = quant_storage
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=compute_dtype or default_compute_dtype(device),
            **kwargs,
        )
    if bits == 8:
        if quant_storage is not None:
            raise ValueError(f"quant_storage={quant_storage} applies to 4-bit weights only; got bits=8.")
        return BitsAndBytesConfig(load_in_8bit=True, **kwargs)
    raise ValueError(f"bits={bits!r} is not supported; expected 4 or 8.")


def will_be_sharded() -> bool:
    """Whether this process is set up to shard models with DeepSpeed ZeRO-3 or FSDP (`accelerate launch` with such a
    config, or a `TrainingArguments` with a ZeRO-3 `deepspeed` config created before loading)."""
    from accelerate.utils import str_to_bool
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() or bool(str_to_bool(os.environ.get("ACCELERATE_USE_FSDP", "false")))


def _default_device_map(device: torch.device):
    if device.type == "cuda":
        # One whole model per process, so that `accelerate launch` (DDP) puts each replica on its own GPU.
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return {"": "cpu"}


def load_quantized(
    model_name_or_path: str | os.PathLike,
    bits: int = 4,
    *,
    model_class=None,
    compute_dtype: torch.dtype | None = None,
    quant_type: str = "nf4",
    double_quant: bool = True,
    device_map=None,
    quant_storage: torch.dtype | None = None,
    sharded: bool | None = None,
    prepare_for_training: bool = False,
    gradient_checkpointing: bool = True,
    **from_pretrained_kwargs,
):
    """Load a model with its linear layers quantized to `bits` by bitsandbytes.

    Args:
        model_name_or_path (`str` or `os.PathLike`):
            Hub id or local folder.
        bits (`int`, *optional*, defaults to 4):
            4 or 8.
        model_class (*optional*):
            The auto class to load with; `AutoModelForCausalLM` by default.
        compute_dtype, quant_type, double_quant:
            See [`bnb_config`].
        device_map (*optional*):
            Passed to `from_pretrained`; by default the whole model on this process's GPU, or on the CPU, and none
            when the model will be sharded (ZeRO-3 and FSDP place the weights themselves and reject a device map).
        quant_storage (`torch.dtype`, *optional*):
            See [`bnb_config`]; by default the compute dtype when the model will be sharded, else `uint8`.
        sharded (`bool`, *optional*):
            Whether the model will be sharded by DeepSpeed ZeRO-3 or FSDP (FSDP-QLoRA, ZeRO-3-QLoRA); detected by
            [`will_be_sharded`] by default.
        prepare_for_training (`bool`, *optional*, defaults to `False`):
            Run [`prepare_for_kbit_training`] so that PEFT adapters can be trained on top (QLoRA).
        gradient_checkpointing (`bool`, *optional*, defaults to `True`):
            With `prepare_for_training`, whether to enable gradient checkpointing.
        from_pretrained_kwargs:
            Anything else `from_pretrained` takes (`revision`, `attn_implementation`, ...).

    Raises:
        `ValueError`: the checkpoint lacks the weights of the model's head (e.g. an encoder such as BERT loaded as a
            causal LM): transformers would initialise them at random, and the model would generate noise.
        `FileNotFoundError`: `model_name_or_path` can only be a local path (`./`, `../`, `/`, `~`, or a folder of it
            exists here) and nothing is there (see [`~hf_ext.paths.resolve_local_or_hub`]).
        `OSError`: a Hub id that could not be loaded, saying what the Hub said, or offline, where it was looked for.
    """
    from transformers import AutoModelForCausalLM

    from .paths import hub_load_error, resolve_local_or_hub

    # A local path is tried first; a missing one is named as such, not taken for a malformed Hub id.
    resolved = resolve_local_or_hub(model_name_or_path, "model_name_or_path")
    device = _device_of(device_map)
    model_class = model_class or AutoModelForCausalLM
    sharded = will_be_sharded() if sharded is None else sharded
    if sharded and device_map is not None:
        raise ValueError(f"device_map={device_map!r} cannot be used with sharded=True (ZeRO-3 / FSDP); expected None.")
    if bits == 4 and sharded and quant_storage is None:
        quant_storage = compute_dtype or default_compute_dtype(device)
    quantization_config = bnb_config(
        bits,
        compute_dtype=compute_dtype,
        quant_type=quant_type,
        double_quant=double_quant,
        device=device,
        quant_storage=quant_storage,
    )
    if bits == 4:
        # Non-quantized parts (embeddings, norms, lm_head) in the compute dtype, as QLoRA does.
        from_pretrained_kwargs.setdefault("dtype", quantization_config.bnb_4bit_compute_dtype)
    if not sharded:
        from_pretrained_kwargs["device_map"] = device_map if device_map is not None else _default_device_map(device)
    want_info = bool(from_pretrained_kwargs.pop("output_loading_info", False))
    try:
        model, loading_info = model_class.from_pretrained(
            resolved,
            quantization_config=quantization_config,
            output_loading_info=True,
            **from_pretrained_kwargs,
        )
    except OSError as error:
        if os.path.exists(resolved):  # a local folder that transformers could not read: its own message says why
            raise
        raise hub_load_error(model_name_or_path, "model_name_or_path", error) from error
    _check_head_was_loaded(model, loading_info, model_name_or_path)
    if prepare_for_training:
        model = prepare_for_kbit_training(model, gradient_checkpointing=gradient_checkpointing)
    return (model, loading_info) if want_info else model


def _check_head_was_loaded(model, loading_info: dict, name) -> None:
    """Raise when weights of a language-model head (outside the model's body) were missing from the checkpoint, hence
    random. Other heads (a classifier's `score`) start untrained by design and are left alone."""
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        return
    prefix = getattr(model, "base_model_prefix", "") or ""
    missing = sorted(
        key for key in loading_info.get("missing_keys", ()) if not (prefix and key.startswith(prefix + "."))
    )
    if missing:
        architectures = getattr(model.config, "architectures", None)
        raise ValueError(
            f"{str(name)!r} has no {type(model).__name__} head: {len(missing)} weight(s) of it are not in the "
            f"checkpoint and would be newly initialised at random ({', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}). The checkpoint was saved as {architectures or 'another model'}; "
            "load a checkpoint trained with this head (a causal LM for the default AutoModelForCausalLM), or pass the "
            "model_class that matches it."
        )


def _device_of(device_map) -> torch.device:
    if device_map is None:
        return _default_device()
    if isinstance(device_map, dict):
        values = {str(v) for v in device_map.values()}
        return torch.device("cpu") if values <= {"cpu", "disk"} else torch.device("cuda")
    return torch.device("cpu") if str(device_map) == "cpu" else _default_device()


def prepare_for_kbit_training(model, gradient_checkpointing: bool = True):
    """Make a k-bit model trainable with adapters: PEFT's `prepare_model_for_kbit_training` (frozen base, norms in
    float32, input gradients enabled), with non-reentrant gradient checkpointing when asked."""
    from peft import prepare_model_for_kbit_training

    # Checkpointing is turned on here rather than by PEFT, which calls it by its pre-5.24 (deprecated) name.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        enable_activation_checkpointing(model, {"use_reentrant": False})
    keep_4bit_trainable(model)
    return model


def keep_4bit_trainable(model) -> int:
    """Keep a 4-bit model exactly trainable on CPU after it has run in eval mode.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for a faster inference kernel the first time its
    layer runs in eval mode on an input that needs no gradient (an evaluation loop, `generate`, a reference forward)
    and keeps it packed. That kernel has no backward, so adapters *below* a packed layer silently get zero gradients
    once training resumes; and packing rounds the quantization scales to bfloat16, so the base weights change a
    little. This turns the repacking off on every 4-bit layer (unpacking any layer already packed, with a warning)
    so that evaluation in the middle of training changes nothing. [`prepare_for_kbit_training`] (and so
    `load_quantized(..., prepare_for_training=True)`) calls it; call it yourself on a 4-bit model you prepared
    otherwise. Idempotent; returns the number of 4-bit layers.
    """
    layers = [module for module in model.modules() if _is_linear4bit(module)]
    unpacked = 0
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
        state = getattr(layer.weight, "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                layer.weight.data, state
            )
            unpacked += 1
    if unpacked:
        import warnings

        warnings.warn(
            f"{unpacked} 4-bit layers had been packed by bitsandbytes for CPU inference (an eval-mode forward before "
            "training); they are unpacked so that gradients flow through them, but packing rounded their scales to "
            "bfloat16. Call `keep_4bit_trainable` (or `prepare_for_kbit_training`) before the first forward to "
            "train on the exact quantized weights.",
            UserWarning,
            stacklevel=2,
        )
    return len(layers)


def _is_linear4bit(module) -> bool:
    cls = type(module)
    return cls.__module__.startswith("bitsandbytes") and hasattr(module.weight, "quant_state")
