"""kernelwatch's checks: what to measure per cadence tier, pure of scheduling and I/O policy."""
