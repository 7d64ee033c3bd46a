"""Sub-commands of the `ds2` CLI (see `ds2_hf.cli`)."""
