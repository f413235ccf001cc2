"""`python -m sdekit`: the `sdekit` command."""

from .cli import console


console()
