"""`python -m hf_ext` runs the `hf-ext` command."""

from hf_ext.cli import main


raise SystemExit(main())
