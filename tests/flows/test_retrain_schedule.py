"""`python -m flows.retrain serve` builds its schedule from `params.yaml: retrain`; a bad value names the setting."""

from __future__ import annotations

import pytest

from rewardline.errors import EXIT_BAD_INPUT, ConfigError, exit_code
from rewardline.retraining.cycle import RetrainConfig


def test_the_schedule_is_the_params_cron_in_its_timezone():
    from flows.retrain import schedule

    cron = schedule(RetrainConfig(schedule_cron="0 3 * * 1", timezone="Europe/Berlin"))
    assert (cron.cron, cron.timezone) == ("0 3 * * 1", "Europe/Berlin")


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("schedule_cron", "every monday", "params.yaml: retrain.schedule_cron: Invalid cron string: \"every monday\"; "
                                      "expected 5 fields (minute hour day month weekday) such as '0 3 * * 1'"),
    ("timezone", "Mars/Base", "params.yaml: retrain.timezone: 'Mars/Base' is not a time zone; expected an IANA name "
                              "such as 'UTC' or 'Europe/Berlin'"),
])
def test_a_bad_schedule_setting_is_a_config_error_naming_it(setting: str, value: str, message: str):
    """`serve` exited 2 with Prefect's "Invalid cron string: ..." or "1 validation error for RunnerDeployment;
    timezone; ..." (the latter only once the runner built the deployment), neither naming params.yaml."""
    from flows.retrain import schedule

    with pytest.raises(ConfigError) as err:
        schedule(RetrainConfig(**{setting: value}))
    assert str(err.value) == message and exit_code(err.value) == EXIT_BAD_INPUT
