"""pytest-benchmark suite for GPU nodes: `pytest bench/benchmarks --benchmark-json=out.json`."""
