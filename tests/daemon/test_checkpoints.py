"""Tests for checkpoints: atomic creation, verification, fallback restore, pruning, confinement."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.checkpoints import MANIFEST, CheckpointStore, restore
from daemon.clock import FakeClock
from daemon.errors import CorruptStateError, StateError
from daemon.profile_store import read_active
from kernels.profile import canonical_profile


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 4, 0, 0, tzinfo=UTC))


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoints", clock)


def _corrupt(store: CheckpointStore, checkpoint_id: str) -> None:
    npz = next(store.path_of(checkpoint_id).glob("params-*.npz"))
    npz.write_bytes(npz.read_bytes()[:-3] + b"xyz")


def test_create_writes_manifest_with_sha256_and_private_modes(store: CheckpointStore) -> None:
    """A checkpoint has a manifest listing every file with its sha256; 0700/0600."""
    m = store.create(
        canonical_profile(), stable=True, reason="test", tiers_passed=("daily",), score=0.5
    )
    folder = store.path_of(m.id)
    assert set(m.files) == {p.name for p in folder.iterdir()} - {MANIFEST}
    assert store.verify(m.id) == m
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]
    assert store.load(m.id) == canonical_profile()


def test_tampered_file_is_corrupt(store: CheckpointStore) -> None:
    """A file whose bytes changed fails verification and entries() reports it."""
    m = store.create(canonical_profile(), stable=True, reason="t")
    _corrupt(store, m.id)
    with pytest.raises(CorruptStateError, match="sha256"):
        store.verify(m.id)
    (row,) = store.entries()
    assert row.manifest is None
    assert "sha256" in row.error


def test_restore_falls_back_to_previous_good_stable(
    tmp_path: Path, store: CheckpointStore, clock: FakeClock
) -> None:
    """Restoring skips a corrupt newest checkpoint and uses the previous good stable one."""
    good = store.create(canonical_profile(), stable=True, reason="t")
    clock.advance(60)
    bad = store.create(canonical_profile().replace(amplitude=0.3), stable=True, reason="t")
    _corrupt(store, bad.id)
    restored, corrupt = restore(store, tmp_path)
    assert restored is not None
    assert restored.manifest.id == good.id
    assert [c[0] for c in corrupt] == [bad.id]
    assert read_active(tmp_path) == canonical_profile()
    restored, corrupt = restore(store, tmp_path, bad.id)
    assert restored is not None
    assert restored.manifest.id == good.id


def test_restore_with_no_good_checkpoint_returns_none(
    tmp_path: Path, store: CheckpointStore
) -> None:
    """With only corrupt checkpoints, restore reports them and restores nothing."""
    m = store.create(canonical_profile(), stable=True, reason="t")
    _corrupt(store, m.id)
    restored, corrupt = restore(store, tmp_path)
    assert restored is None
    assert len(corrupt) == 1


@pytest.mark.parametrize(
    "bad_id", ["..", "../etc", "/etc/passwd", "a/b", "", "20260104T000000000000Z-../x"]
)
def test_ids_cannot_escape(store: CheckpointStore, bad_id: str) -> None:
    """Ids that are not plain checkpoint ids are refused before touching the disk."""
    with pytest.raises(StateError):
        store.path_of(bad_id)


def test_symlinked_checkpoint_is_refused(tmp_path: Path, store: CheckpointStore) -> None:
    """A checkpoint id that is a link pointing outside the folder is refused."""
    store.root.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    link = store.root / "20260104T000000000000Z-aaaaaaaaaaaa"
    link.symlink_to(outside)
    with pytest.raises(StateError):
        store.verify(link.name)


def test_prune_keeps_newest_stable_and_best_scores(
    store: CheckpointStore, clock: FakeClock
) -> None:
    """Prune keeps the last N stable and the best K by score, and removes the rest."""
    made = []
    for i, score in enumerate([0.9, 0.1, 0.2, 0.3, 0.4]):
        made.append(
            store.create(
                canonical_profile().replace(amplitude=0.1 + i / 100),
                stable=True,
                reason="t",
                score=score,
            )
        )
        clock.advance(10)
    removed = store.prune(keep_stable=2, keep_best=1)
    assert sorted(removed) == sorted([made[1].id, made[2].id])
    assert store.ids() == [made[0].id, made[3].id, made[4].id]


def test_prune_keeps_forensic_and_manual_checkpoints_unless_asked(
    store: CheckpointStore, clock: FakeClock
) -> None:
    """Automatic pruning never removes non-stable (forensic, manual) checkpoints; a person
    asking for it (``include_unstable``) does."""
    forensic = store.create(canonical_profile(), stable=False, reason="forensic:coherence_loss")
    clock.advance(10)
    manual = store.create(canonical_profile().replace(amplitude=0.2), stable=False, reason="m")
    for i in range(3):
        clock.advance(10)
        store.create(
            canonical_profile().replace(amplitude=0.3 + i / 100), stable=True, reason="t", score=i
        )
    removed = store.prune(keep_stable=1, keep_best=0)
    assert len(removed) == 2
    assert {forensic.id, manual.id} <= set(store.ids())
    assert sorted(store.prune(keep_stable=1, keep_best=0, include_unstable=True)) == sorted(
        [forensic.id, manual.id]
    )
    assert len(store.ids()) == 1


def test_checkpoint_create_records_the_environment_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kernelwatch checkpoint create` writes the machine's fingerprint into the manifest."""
    from checks.fingerprint import collect_fingerprint
    from daemon.cli_recovery import main

    state = tmp_path / "state"
    assert main(["checkpoint", "create", "--state-dir", str(state), "--reason", "by hand"]) == 0
    checkpoint_id = capsys.readouterr().out.strip()
    manifest = CheckpointStore(state / "checkpoints").verify(checkpoint_id)
    assert manifest.fingerprint == collect_fingerprint().digest()
    assert manifest.fingerprint
