"""The `hf-ext` commands, one module each, as `trl/scripts/`: `make_parser()` and `main(argv)`, runnable alone
(`python -m hf_ext.scripts.<name>`). `hf_ext.cli.COMMANDS` lists them."""
