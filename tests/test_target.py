"""duvo_monitor.target without I/O: flag > environment > config file > default, each setting on
its own, and a bad value named by where it came from."""

from __future__ import annotations

import pytest

from duvo_monitor.config import ApiConfig, parse_config
from duvo_monitor.target import TargetError, TargetFlags, resolve_target

TEAM_A = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
TEAM_B = "0b0e7a6c-5c1e-4e57-9d1e-6a0c3f1f2b9d"
FILE = parse_config(
    {
        "api": {
            "base_url": "http://file.example",
            "version": "v1",
            "team_id": TEAM_A,
            "requests_per_minute": 60,
        }
    }
).api


def test_defaults_when_nothing_is_given() -> None:
    """No file, no variables, no flags: the defaults of ApiConfig."""
    assert resolve_target(ApiConfig(), TargetFlags(), {}) == ApiConfig()


def test_the_file_beats_the_defaults() -> None:
    """The config file's api section is kept when neither environment nor flags say otherwise."""
    api = resolve_target(FILE, TargetFlags(), {})
    assert (api.base_url, api.version, api.team_id, api.requests_per_minute) == (
        "http://file.example",
        "v1",
        TEAM_A,
        60,
    )


def test_the_environment_beats_the_file() -> None:
    """DUVO_API_URL, DUVO_API_VERSION and DUVO_TEAM_ID override the file, one by one."""
    environ = {
        "DUVO_API_URL": "http://env.example/",
        "DUVO_API_VERSION": "V2",
        "DUVO_TEAM_ID": TEAM_B.upper(),
    }
    api = resolve_target(FILE, TargetFlags(), environ)
    assert (api.base_url, api.version, api.team_id) == ("http://env.example", "v2", TEAM_B)
    assert api.requests_per_minute == 60  # no variable for the budget: the file's stands
    only_url = resolve_target(FILE, TargetFlags(), {"DUVO_API_URL": "https://env.example"})
    assert (only_url.base_url, only_url.version) == ("https://env.example", "v1")


def test_flags_beat_the_environment() -> None:
    """Each flag overrides its variable; a flag not given leaves the variable's value."""
    environ = {"DUVO_API_URL": "http://env.example", "DUVO_API_VERSION": "v2"}
    flags = TargetFlags(base_url="http://flag.example", requests_per_minute="120")
    api = resolve_target(FILE, flags, environ)
    assert (api.base_url, api.version, api.team_id, api.requests_per_minute) == (
        "http://flag.example",
        "v2",
        TEAM_A,
        120,
    )
    flags = TargetFlags(api_version="v1", team_id=TEAM_B)
    api = resolve_target(ApiConfig(), flags, {"DUVO_API_VERSION": "v2", "DUVO_TEAM_ID": TEAM_A})
    assert (api.version, api.team_id) == ("v1", TEAM_B)


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (TargetFlags(api_version="v3"), {}, "--api-version: expected v1 or v2, got 'v3'"),
        (TargetFlags(), {"DUVO_API_VERSION": "2"}, "$DUVO_API_VERSION: expected v1 or v2"),
        (TargetFlags(base_url="api.duvo.ai"), {}, "--base-url: expected an http(s) URL"),
        (TargetFlags(), {"DUVO_API_URL": "http://"}, "$DUVO_API_URL: expected an http(s) URL"),
        (TargetFlags(team_id="team-1"), {}, "--team-id: not a uuid: 'team-1'"),
        (TargetFlags(), {"DUVO_TEAM_ID": "x"}, "$DUVO_TEAM_ID: not a uuid"),
        (TargetFlags(requests_per_minute="0"), {}, "--requests-per-minute: expected a whole"),
        (TargetFlags(requests_per_minute="1.5"), {}, "--requests-per-minute: expected a whole"),
    ],
)
def test_a_bad_value_names_its_source(
    flags: TargetFlags, environ: dict[str, str], message: str
) -> None:
    """A value that cannot be used is a TargetError (a ValueError) on one line, naming the flag
    or variable it came from."""
    with pytest.raises(TargetError) as caught:
        resolve_target(ApiConfig(), flags, environ)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_bad_variable_under_a_good_flag_is_still_refused() -> None:
    """A broken variable is reported even when a flag overrides it: it is a setting someone
    made, and it would bite the next command without the flag."""
    with pytest.raises(TargetError, match=r"\$DUVO_API_VERSION"):
        resolve_target(ApiConfig(), TargetFlags(api_version="v1"), {"DUVO_API_VERSION": "v9"})
