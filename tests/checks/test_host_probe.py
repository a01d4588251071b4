"""The host probe: one record of every daily entry and calibration, and its summary table."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bench.host_probe import CALIBRATIONS, main, summary_lines
from kernels.registry import builtin_kernels


def test_a_probe_times_every_daily_entry_and_every_calibration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--repetitions", "2"]) == 0
    record = json.loads(capsys.readouterr().out)
    entries = {
        f"{kernel.name}/{batch.name}"
        for kernel in builtin_kernels().values()
        for batch in kernel.batch_configs
    }
    assert set(record["levels"]) == entries | set(CALIBRATIONS)
    assert all(level > 0 for level in record["levels"].values())
    assert set(record["minflt_per_call"]) == set(record["levels"])

    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps(record) + "\n")
    assert main(["--summary", str(probes)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3  # a title, a header, one row per probe
    levels = record["levels"]
    want = levels["octahedron/large"] / levels["dispatch"]
    assert float(table[2].split()[1]) == pytest.approx(want, abs=5e-4)

    kept = tmp_path / "probes.jsonl.gz"  # as the studies under bench/studies/ keep them
    kept.write_bytes(gzip.compress(probes.read_bytes()))
    assert main(["--summary", str(kept)]) == 0
    assert capsys.readouterr().out.splitlines() == table


def test_the_summary_divides_the_entry_by_each_calibration() -> None:
    record = {
        "t": 0.0,
        "levels": {"octahedron/large": 0.030, "dispatch": 0.006, "memory": 0.024, "compute": 0.01},
    }
    row = summary_lines([record])[2].split()
    assert row[0] == "00:00:00"
    assert [float(v) for v in row[1:4]] == [5.0, 1.25, 3.0]
    assert [float(v) for v in row[4:]] == [30.0, 6.0, 24.0, 10.0]


def test_bad_repetitions_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--repetitions", "0"])
    assert stop.value.code == 2
    assert "--repetitions must be >= 1, got 0" in capsys.readouterr().err
