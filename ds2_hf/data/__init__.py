"""Built-in instruction data for the offline demo (see `natural_instructions`)."""

from ds2_hf.data.natural_instructions import natural_instructions

__all__ = ["natural_instructions"]
