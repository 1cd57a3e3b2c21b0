"""The .lottery file format: `header` (no torch: what `lottery info` reads), `container` (the whole
file), the network section (`network_section`: the mask and the small networks, coded by
`mask_coding` and `param_coding` in one stream of `rangecoder`), the latent section
(`latent_coding`), and `varint`. Byte layout: docs/format.md."""
