"""Settings: flags over `LEDGER_*` over the config file over defaults; a bad value is one
clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.config import FLAGS, Settings, load
from ledger.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_config_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root --config / --log-level flags set LEDGER_* for the process: undone after."""
    for name in ("LEDGER_CONFIG", "LEDGER_LOG_LEVEL"):
        monkeypatch.setenv(name, "")  # records the value to restore, even "not set"
        monkeypatch.delenv(name)


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_TOPIC", "from-env")
    monkeypatch.setenv("LEDGER_DECODE_WORKERS", "0")
    assert load().topic == "from-env"
    assert load(topic="from-flag", decode_workers=None).topic == "from-flag"
    assert load().decode_workers == 0


@pytest.mark.parametrize(
    ("env", "value", "says"),
    [
        ("LEDGER_DECODE_WORKERS", "-1", "greater than or equal to 0, got '-1'"),
        ("LEDGER_BATCH_SIZE", "lots", "valid integer"),
        ("LEDGER_SECURITY_PROTOCOL", "TLS", "security_protocol"),
    ],
)
def test_a_bad_environment_value_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, says: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=env) as caught:
        load()
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)

    result = CliRunner().invoke(cli, ["consume", "--until-idle", "1"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and env in result.output


def test_the_config_file_sits_between_the_environment_and_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = tmp_path / "prod.toml"
    conf.write_text('topic = "from-file"\nbatch_size = 123\ndb = "file.duckdb"\n')
    monkeypatch.setenv("LEDGER_CONFIG", str(conf))
    assert (load().topic, load().batch_size, load().db) == ("from-file", 123, "file.duckdb")
    monkeypatch.setenv("LEDGER_TOPIC", "from-env")
    assert load().topic == "from-env" and load(topic="from-flag").topic == "from-flag"
    assert load().batch_size == 123


def test_ledger_toml_in_the_working_directory_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LEDGER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load().topic == "agent-audit-events"
    (tmp_path / "ledger.toml").write_text('topic = "here"\n')
    assert load().topic == "here"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('topik = "x"\n', "topik is not a setting"),
        ("topic = \n", "config file"),
        ('batch_size = "many"\n', "batch_size"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, says: str
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    result = CliRunner().invoke(cli, ["--config", str(conf), "consume", "--until-idle", "1"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert says in result.output


def test_a_named_config_file_that_is_missing_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEDGER_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load()


def test_the_config_file_db_is_the_default_of_every_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f'db = "{tmp_path / "absent.duckdb"}"\n')
    monkeypatch.delenv("LEDGER_DB", raising=False)
    result = CliRunner().invoke(cli, ["--config", str(conf), "verify"])
    assert result.exit_code == 1 and "absent.duckdb" in result.output


def test_every_flag_an_error_suggests_exists() -> None:
    """`load` names FLAGS[setting] in its errors: each must be a real option of a command."""
    import click

    options: set[str] = set()
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option):
                options.update(param.opts)
    options.update(o for p in cli.params if isinstance(p, click.Option) for o in p.opts)
    assert set(FLAGS.values()) <= options, set(FLAGS.values()) - options
    assert set(FLAGS) <= set(Settings.model_fields)


def test_log_level_is_a_setting_and_a_root_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_LOG_LEVEL", "warning")
    assert load().log_level == "WARNING"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -1}, "batch_size"),
        ({"memory_limit": "1KB"}, "below 64MB"),
        ({"memory_limit": "63MB"}, "below 64MB"),
        ({"memory_limit": "banana"}, "not a size"),
    ],
)
def test_numbers_no_run_could_use_are_refused_up_front(
    overrides: dict[str, object], why: str
) -> None:
    """Refused as settings (one line naming the flag), not later as an unexpected DuckDB or
    aiokafka failure after the ledger file was created."""
    with pytest.raises(ConfigError, match=why):
        load(**overrides)


def test_sizes_are_read_as_duckdb_reads_them() -> None:
    assert load(memory_limit="64MB").memory_limit == "64MB"
    assert load(memory_limit="1.5GiB").memory_limit == "1.5GiB"
