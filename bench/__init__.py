"""The benchmarks (docs/performance.md): each runs as a module from the project root,
`.venv/bin/python -m bench.NAME`, sharing `bench.harness`."""
