"""kernelwatch's benchmarks: `make bench` prints one table per area (speed, memory, budgets)."""
