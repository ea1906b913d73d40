"""Benchmark grids (``condense bench``) and their reports (``condense report``).

Nothing is imported eagerly, so ``condense --help`` stays free of torch: import
:mod:`condense.bench.run` (the grid runner), :mod:`condense.bench.spec` (the TOML grid),
or the report modules directly.
"""
