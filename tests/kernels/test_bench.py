"""Tests of the kernel table's formatting and its copy-bandwidth probe."""

from __future__ import annotations

from bench.kernels import BenchRow, copy_bandwidth, format_table


def test_format_table_shows_ratio_error_and_bandwidth() -> None:
    """A row prints MLX and NumPy milliseconds, their ratio, the error and the bandwidth share."""
    rows = [
        BenchRow("octahedron", 1024, "D=4096", 0.120, 0.080, 3e-7, 0.021),
        BenchRow("quantum:eigh", 1024, "n=32", 0.100, 0.125, None),
    ]
    text = format_table(rows)
    lines = text.splitlines()
    assert "120.00" in lines[2]
    assert "80.00" in lines[2]
    assert "1.50" in lines[2]
    assert "3.0e-07" in lines[2]
    assert "2.1%" in lines[2]
    assert "0.80" in lines[3]
    assert rows[1].ratio == 0.8


def test_copy_bandwidth_is_positive() -> None:
    """The np.copyto probe measures a positive bandwidth in bytes per second."""
    assert copy_bandwidth(nbytes=4 * 2**20) > 1e6
