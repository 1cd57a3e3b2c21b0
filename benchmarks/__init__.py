"""Quality and speed benchmarks of `lotterycli` against classical baselines.

Run `python -m benchmarks --quick` (smoke scale, < 20 min on 2 CPU cores) or
`python -m benchmarks --full`; `python -m benchmarks --help` lists the options. Needs the
`bench` extra (`pip install -e '.[bench]'`: matplotlib, scikit-image, scipy, bm3d).

Modules: `data` (Kodak crops and photographs), `bdrate` (Bjontegaard metrics), `baselines`
(codecs and restoration baselines), `schema` (results JSON layout and `validate_results`),
`report` (docs/benchmarks.md and plots from the JSON); the protocol's parts `compress_suite`,
`restore_suite`, `speed_suite`, `engine`, `load` and `batch`, their shared settings and helpers
in `suite`, the time estimate in `budget`, and `runner` (runs the parts, merges results, the
command line). Tools beside the protocol: `tune` (config screens), `profile_step`, `memory`,
`compare_runs`, `gpu_check`.
"""
