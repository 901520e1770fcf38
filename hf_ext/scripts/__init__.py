"""The `hf-ext` commands, one module each, as `trl/scripts/`: `make_parser()` and `main(argv)`, runnable alone
(`python -m hf_ext.scripts.<name>`). `hf_ext.cli.COMMANDS` lists them."""

from hf_ext.logging_utils import configure_command_output


# A command run alone (`python -m hf_ext.scripts.aot`, and each rank `accelerate launch` starts) prints what `hf-ext`
# prints; this runs before the command's module imports tqdm.
configure_command_output()
