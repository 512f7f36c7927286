"""The programs the benchmarks compare usagegraph with, as a user would write them without it."""
