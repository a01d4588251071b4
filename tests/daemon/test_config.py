"""Tests for configuration loading: defaults, overlays, strict validation with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import config_path_from_env, load_config, state_dir_from_env
from daemon.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kw.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_load_without_a_file() -> None:
    """Every key has a default: no file is needed to run."""
    config = load_config(None)
    assert config.http.listen == "127.0.0.1"
    assert config.http.port == 9464
    assert set(config.tiers) == {"daily", "weekly", "monthly", "quarterly"}
    assert config.tiers["daily"].cron == "0 1 * * *"
    assert any(r.issue == "check_unhealthy" for r in config.rules)


def test_file_overlays_defaults_key_by_key(tmp_path: Path) -> None:
    """A file changes only what it names; the rest keeps its defaults."""
    config = load_config(write(tmp_path, "[http]\nport = 9999\n"))
    assert config.http.port == 9999
    assert config.http.listen == "127.0.0.1"
    assert config.source == str(tmp_path / "kw.toml")


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    """A typo is refused with the file and the full key path."""
    path = write(tmp_path, "[telemetry]\nfsynk = 'always'\n")
    with pytest.raises(ConfigError, match=r"kw\.toml: telemetry\.fsynk: unknown key"):
        load_config(path)


def test_bad_value_names_key_and_value(tmp_path: Path) -> None:
    """A value of the wrong kind names the key path and the value."""
    path = write(tmp_path, "[tiers.daily]\nwindow_s = 'long'\n")
    with pytest.raises(ConfigError, match=r"tiers\.daily\.window_s: expected a number, got 'long'"):
        load_config(path)


def test_bad_choice_lists_the_allowed_values(tmp_path: Path) -> None:
    """An enumerated setting says which values it accepts."""
    with pytest.raises(ConfigError, match=r"telemetry\.fsync: 'sometimes' is not one of"):
        load_config(write(tmp_path, "[telemetry]\nfsync = 'sometimes'\n"))


def test_bad_cron_is_refused(tmp_path: Path) -> None:
    """A cron expression APScheduler cannot parse is refused at load, not at fire time."""
    with pytest.raises(ConfigError, match=r"tiers\.weekly\.cron: invalid cron"):
        load_config(write(tmp_path, "[tiers.weekly]\ncron = '61 * * * *'\n"))


@pytest.mark.parametrize(
    "target", [":Quick", "tests.fixtures.checks:", "no_colon", "a b:c", "m:x-y"]
)
def test_check_module_must_name_a_module_and_an_attribute(tmp_path: Path, target: str) -> None:
    """A check target that the registry could not import is refused, naming key and value."""
    path = write(tmp_path, f"[checks.mine]\nmodule = '{target}'\n")
    with pytest.raises(ConfigError, match=r"kw\.toml: checks\.mine\.module: expected") as info:
        load_config(path)
    assert repr(target) in str(info.value)


def test_dotted_check_module_and_attribute_are_accepted(tmp_path: Path) -> None:
    """A dotted module with a dotted attribute is a valid target."""
    config = load_config(write(tmp_path, "[checks.mine]\nmodule = 'pkg.mod:Outer.Inner'\n"))
    assert config.checks["mine"].module == "pkg.mod:Outer.Inner"


def test_rules_are_validated(tmp_path: Path) -> None:
    """A rule whose critical level is milder than its warning level is refused."""
    text = "[[rules]]\nname='r'\nmeasurement='x_ratio'\nissue='i'\nwarn=0.5\ncrit=0.1\n"
    with pytest.raises(ConfigError, match=r"rules\[0\]\.crit"):
        load_config(write(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """A syntax error names the file."""
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[http\n"))


def test_non_ip_listen_address_is_refused(tmp_path: Path) -> None:
    """The bind address must be an IP address."""
    with pytest.raises(ConfigError, match=r"http\.listen"):
        load_config(write(tmp_path, "[http]\nlisten = 'everywhere'\n"))


def test_cli_options_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config and --state-dir override KERNELWATCH_CONFIG and KERNELWATCH_STATE_DIR."""
    monkeypatch.setenv("KERNELWATCH_CONFIG", "/env.toml")
    monkeypatch.setenv("KERNELWATCH_STATE_DIR", "/env-state")
    assert config_path_from_env(None) == Path("/env.toml")
    assert config_path_from_env("/cli.toml") == Path("/cli.toml")
    assert state_dir_from_env(None) == Path("/env-state")
    assert state_dir_from_env("/cli") == Path("/cli")
    monkeypatch.delenv("KERNELWATCH_STATE_DIR")
    assert state_dir_from_env(None) == Path("./var")
