"""Tests of the kernel profile: validation, identity, and atomic JSON + npz persistence."""

from __future__ import annotations

import hashlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings

from kernels.profile import (
    CANONICAL_RATIOS,
    Profile,
    ProfileError,
    canonical_profile,
    load_profile,
    profile_to_dict,
    save_profile,
)
from tests.strategies import profiles

CANONICAL = canonical_profile()


def test_canonical_defaults_follow_kernels_md() -> None:
    """The canonical profile has the radii, ratios, phases and wave of KERNELS.md."""
    assert CANONICAL.radii == (1.0, 1.125, 1.35, 1.51875)
    assert CANONICAL_RATIOS == (9 / 8, 6 / 5, 9 / 8)
    for q in range(3):
        assert CANONICAL.radii[q + 1] / CANONICAL.radii[q] == pytest.approx(CANONICAL_RATIOS[q])
    assert CANONICAL.phases == pytest.approx(tuple(q * math.pi / 4 for q in range(4)))
    assert (CANONICAL.amplitude, CANONICAL.frequency) == (0.1, 1.0)
    assert CANONICAL.biases == (0.0, 0.0, 0.0, 0.0)
    assert CANONICAL.vectorization == "aggressive"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"radii": (1, 1, 1)}, "radii"),
        ({"radii": (1, 0, 1, 1)}, "radii"),
        ({"radii": (1, math.nan, 1, 1)}, "radii"),
        ({"phases": (0, 0, 0, math.inf)}, "phases"),
        ({"amplitude": math.nan}, "amplitude"),
        ({"frequency": "fast"}, "frequency"),
        ({"vectorization": "turbo"}, "vectorization"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"quantum_precision": "bfloat16"}, "quantum_precision"),
        ({"drill": {"explode": True}}, "drill"),
        ({"drill": {"slow_factor": 0.5}}, "slow_factor"),
        ({"drill": {"slow_factor": 1.3}}, "slow_factor must be a whole number"),
        ({"drill": {"hang": 1}}, "hang"),
        ({"drill": {"batch_scale": 0}}, "batch_scale"),
    ],
)
def test_invalid_fields_are_rejected_by_name(changes: dict[str, Any], field: str) -> None:
    """Each invalid field raises ValueError naming it."""
    with pytest.raises(ValueError, match=field):
        CANONICAL.replace(**changes)


def test_profile_is_frozen() -> None:
    """Profiles cannot be mutated, including their drill mapping."""
    profile = CANONICAL.replace(drill={"hang": False})
    with pytest.raises(AttributeError):
        profile.amplitude = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        profile.drill["hang"] = True  # type: ignore[index]


def test_profile_id_is_stable_and_content_addressed() -> None:
    """Equal contents give equal ids; any change gives a new 12-hex id."""
    assert CANONICAL.profile_id == canonical_profile().profile_id
    assert len(CANONICAL.profile_id) == 12
    int(CANONICAL.profile_id, 16)
    assert CANONICAL.replace(chunk_rows=64).profile_id != CANONICAL.profile_id
    assert CANONICAL.replace(drill={"hang": True}).profile_id != CANONICAL.profile_id


def test_profiles_are_hashable_by_content() -> None:
    """Equal profiles hash equally, drill included, so they can key a dict."""
    a = CANONICAL.replace(drill={"hang": False})
    b = canonical_profile().replace(drill={"hang": False})
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1


def test_profile_to_dict_is_json() -> None:
    """profile_to_dict gives plain JSON values."""
    doc = profile_to_dict(CANONICAL.replace(drill={"slow_factor": 2}))
    assert json.loads(json.dumps(doc)) == doc
    assert doc["drill"] == {"slow_factor": 2.0}


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(profile=profiles(modes=("aggressive", "balanced", "conservative")))
def test_save_load_round_trip(tmp_path: Path, profile: Profile) -> None:
    """Any valid profile survives save and load unchanged."""
    save_profile(profile, tmp_path / "active")
    assert load_profile(tmp_path / "active") == profile


def test_files_are_private_and_stale_params_removed(tmp_path: Path) -> None:
    """The folder is 0700, files 0600, and only the committed params file remains."""
    folder = tmp_path / "active"
    save_profile(CANONICAL, folder)
    save_profile(CANONICAL.replace(radii=(2, 2, 2, 2)), folder)
    assert folder.stat().st_mode & 0o777 == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2
    assert names[1] == "profile.json"
    assert names[0].startswith("params-")
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    assert load_profile(folder).radii == (2, 2, 2, 2)


def test_json_names_its_params_file_and_checksum(tmp_path: Path) -> None:
    """profile.json carries a format version and the name and sha256 of the npz."""
    save_profile(CANONICAL, tmp_path)
    doc = json.loads((tmp_path / "profile.json").read_text())
    assert doc["format_version"] == 1
    assert doc["params_file"] == f"params-{doc['params_sha256'][:12]}.npz"
    assert "radii" not in doc


def _saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """Save the canonical profile and return the folder and its JSON document."""
    save_profile(CANONICAL, tmp_path)
    return tmp_path, json.loads((tmp_path / "profile.json").read_text())


def _rewrite_json(folder: Path, doc: dict[str, Any]) -> None:
    """Replace profile.json with ``doc``."""
    (folder / "profile.json").write_text(json.dumps(doc))


def test_load_rejects_unknown_field(tmp_path: Path) -> None:
    """An unknown JSON field is rejected, naming the file and the field."""
    folder, doc = _saved(tmp_path)
    doc["turbo"] = True
    _rewrite_json(folder, doc)
    with pytest.raises(ProfileError, match=r"profile\.json.*turbo"):
        load_profile(folder)


def test_canonical_ratios_are_not_a_profile_field(tmp_path: Path) -> None:
    """The canonical ratios are fixed: neither settable on a profile nor accepted from a file."""
    with pytest.raises(TypeError, match="canonical_ratios"):
        CANONICAL.replace(canonical_ratios=(1.0, 1.0, 1.0))
    folder, doc = _saved(tmp_path)
    doc["canonical_ratios"] = [9 / 8, 6 / 5, 9 / 8]
    _rewrite_json(folder, doc)
    with pytest.raises(ProfileError, match=r"profile\.json.*unknown field.*canonical_ratios"):
        load_profile(folder)


def test_load_rejects_missing_params_file(tmp_path: Path) -> None:
    """A missing npz is rejected, naming it."""
    folder, doc = _saved(tmp_path)
    (folder / doc["params_file"]).unlink()
    with pytest.raises(ProfileError, match="params_file"):
        load_profile(folder)


def test_load_rejects_checksum_mismatch(tmp_path: Path) -> None:
    """An npz whose sha256 differs from the JSON's is rejected."""
    folder, doc = _saved(tmp_path)
    path = folder / doc["params_file"]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ProfileError, match="params_sha256"):
        load_profile(folder)


def _replace_arrays(folder: Path, doc: dict[str, Any], **arrays: npt.ArrayLike) -> None:
    """Write new arrays into the npz and fix up the checksum so only the arrays are bad."""
    base: dict[str, npt.ArrayLike] = {
        "radii": np.ones(4),
        "phases": np.zeros(4),
        "biases": np.zeros(4),
    }
    base.update(arrays)
    buf = io.BytesIO()
    # allow_pickle=True is savez's default, spelled out so that ``**base`` is not also
    # matched against it: the object-array test needs the pickled array written.
    np.savez(buf, allow_pickle=True, **base)
    (folder / doc["params_file"]).write_bytes(buf.getvalue())
    doc["params_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    _rewrite_json(folder, doc)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"radii": np.array([1.0, np.nan, 1.0, 1.0])}, "radii.*NaN"),
        ({"phases": np.zeros(5)}, "phases.*shape"),
        ({"extra": np.zeros(4)}, "arrays must be"),
        ({"radii": np.array([1.0, -1.0, 1.0, 1.0])}, "radii"),
    ],
)
def test_load_rejects_bad_arrays(tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
    """NaN/Inf, wrong shapes, extra arrays and invalid values in the npz are rejected."""
    folder, doc = _saved(tmp_path)
    _replace_arrays(folder, doc, **arrays)
    with pytest.raises(ProfileError, match=message):
        load_profile(folder)


def test_load_rejects_pickled_arrays(tmp_path: Path) -> None:
    """Object arrays (which need pickle) are refused."""
    folder, doc = _saved(tmp_path)
    _replace_arrays(folder, doc, radii=np.array([1, 2, 3, {}], dtype=object))
    with pytest.raises(ProfileError, match="arrays"):
        load_profile(folder)


def test_load_rejects_nan_scalar(tmp_path: Path) -> None:
    """A NaN scalar in the JSON is rejected, naming the field."""
    folder, doc = _saved(tmp_path)
    doc["amplitude"] = math.nan
    _rewrite_json(folder, doc)
    with pytest.raises(ProfileError, match="amplitude"):
        load_profile(folder)


def test_missing_folder_is_a_profile_error(tmp_path: Path) -> None:
    """Loading from an empty folder raises ProfileError naming profile.json."""
    with pytest.raises(ProfileError, match=r"profile\.json"):
        load_profile(tmp_path)


def test_kernels_package_and_profile_do_not_import_mlx() -> None:
    """kernels, kernels.profile and kernels.registry stay import-light (no MLX)."""
    code = (
        "import sys, kernels, kernels.profile, kernels.registry; "
        "sys.exit(1 if 'mlx' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
