"""Fitting a model to one image: the schedule, the distortion terms, the optimisation loop."""
