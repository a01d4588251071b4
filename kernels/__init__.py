"""kernelwatch's numerical kernels: MLX implementations, float64 references, invariants.

This package's ``__init__`` imports nothing heavy: import the kernel modules themselves.
"""
