"""Compression: the encoder (fit, ARM refit, network quantization, file) and the decoder."""
