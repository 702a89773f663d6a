"""Settings: flags over `LEDGER_*` over defaults, and a bad value is one clear line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.config import load
from ledger.errors import ConfigError


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
