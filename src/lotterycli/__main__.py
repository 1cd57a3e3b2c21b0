"""`python -m lotterycli`: the `lottery` command."""

from .cli import main

main()
