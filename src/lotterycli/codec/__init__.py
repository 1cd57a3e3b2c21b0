"""The random-network codec: model parts, fixed-point decoder arithmetic, entropy model."""
