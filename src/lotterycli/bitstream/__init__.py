"""The .lottery file format: `header` (no torch: what `lottery info` reads), `container` (the whole
file), and the coding of its sections (`mask_coding`, `param_coding`, `latent_coding`, `varint`).
Byte layout: docs/format.md."""
