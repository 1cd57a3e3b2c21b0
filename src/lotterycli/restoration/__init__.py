"""Zero-shot restoration: degradation operators, their classical counterparts, the ensemble."""
