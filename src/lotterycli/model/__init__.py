"""The random-network model: its parts, the float model fitted per image, and the exact
fixed-point arithmetic the decoder renders with. Nothing here reads or writes files."""
