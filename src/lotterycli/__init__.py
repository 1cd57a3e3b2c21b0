"""lottery: zero-shot image restoration and neural image compression with random networks."""

__version__ = "0.2.0"
