"""Training arguments the AOT tests share: a short, quiet run without checkpoints."""

from hf_ext._compat import activation_checkpointing_arg
from hf_ext.aot import AOTConfig


FAST = {
    activation_checkpointing_arg(): False,
    "report_to": "none",
    "disable_tqdm": True,
    "save_strategy": "no",
    "logging_steps": 1,
    "max_length": 64,
    "dataloader_pin_memory": False,
}


def make_args(tmp_path, **kwargs) -> AOTConfig:
    """`AOTConfig` writing under `tmp_path/out`, `FAST` overridden by `kwargs`."""
    return AOTConfig(str(tmp_path / "out"), **{**FAST, **kwargs})
