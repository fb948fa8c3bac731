"""Config: defaults, every problem with its YAML path, runs files, check-config's exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from duvo_monitor.cli import main
from duvo_monitor.config import load_config, parse_config, read_runs_file
from duvo_monitor.errors import ConfigError

RUN = "11111111-1111-4111-8111-111111111111"


def problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return [str(p) for p in info.value.problems]


def test_defaults() -> None:
    """An empty config is a valid one: v2, 300/min, one stdout sink."""
    config = parse_config({})
    assert config.api.version == "v2"
    assert config.api.requests_per_minute == 300
    assert config.api.base_url == "https://api.duvo.ai"
    assert [s.type for s in config.sinks] == ["stdout"]


def test_issue_example_parses() -> None:
    """The config shape of the issue is accepted as written."""
    config = parse_config(
        {
            "api": {
                "base_url": "https://api.duvo.ai",
                "version": "v2",
                "team_id": RUN,
                "requests_per_minute": 300,
            },
            "watch": {
                "runs": [RUN],
                "runs_file": "runs.txt",
                "discover": {"agents": [RUN], "since": "1h"},
            },
            "state": {"path": "duvo-monitor.db"},
            "sinks": [{"type": "stdout"}, {"type": "file", "path": "events.jsonl"}],
            "metrics": {"listen": "127.0.0.1:9464"},
        }
    )
    assert config.watch.discover is not None and config.watch.discover.since == 3600
    assert config.metrics.listen == "127.0.0.1:9464"


def test_every_problem_with_its_path() -> None:
    """Unknown keys, wrong types, bad uuids and bad durations are all reported at once."""
    found = problems(
        {
            "api": {"version": "v3", "requests_per_minute": "lots", "colour": 1},
            "watch": {"runs": [RUN, "not-a-uuid"], "discover": {"since": "soon"}},
            "polling": {"min_interval": "5x"},
            "extra": True,
        }
    )
    joined = "\n".join(found)
    for expected in (
        "api.version",
        "api.requests_per_minute",
        "api.colour: unknown key",
        "watch.runs[1]: not a uuid",
        "watch.discover.since",
        "polling.min_interval",
        "extra: unknown key",
    ):
        assert expected in joined, expected


def test_sink_problems_have_paths() -> None:
    """Sink sections are checked too, with their index in the list."""
    joined = "\n".join(problems({"sinks": [{"type": "stdout"}, {"type": "webhook"}]}))
    assert "sinks[1]" in joined


def test_discovery_needs_v2() -> None:
    """v1 has no list-runs endpoint, so discovery with v1 is refused."""
    assert any(
        "watch.discover" in p
        for p in problems({"api": {"version": "v1"}, "watch": {"discover": {}}})
    )


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    """state.path and runs_file are relative to the config file's folder."""
    (tmp_path / "c.yaml").write_text("state:\n  path: s.db\nwatch:\n  runs_file: runs.txt\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.state.path == str(tmp_path / "s.db")
    assert config.watch.runs_file == str(tmp_path / "runs.txt")


def test_runs_file(tmp_path: Path) -> None:
    """One uuid a line, comments and blanks allowed, bad lines named by line number."""
    path = tmp_path / "runs.txt"
    path.write_text(f"# ours\n{RUN}  # the first\n\nnope\n{RUN.upper()}\n")
    runs, bad = read_runs_file(str(path))
    assert runs == [RUN, RUN]
    assert [p.path for p in bad] == [f"{path}:4"]


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config: 0 for a good file; 2 with every problem and no traceback for a bad one."""
    good = tmp_path / "good.yaml"
    good.write_text(f"watch:\n  runs: [{RUN}]\n")
    assert main(["check-config", "--config", str(good)], environ={}) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("api:\n  version: v9\nwatch:\n  runs: [x]\n")
    assert main(["check-config", "--config", str(bad)], environ={}) == 2
    err = capsys.readouterr().err
    assert "api.version" in err and "watch.runs[0]" in err and "Traceback" not in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("api: [\n")
    assert main(["check-config", "--config", str(broken)], environ={}) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["check-config", "--config", str(tmp_path / "missing.yaml")], environ={}) == 2


def test_example_config_is_valid_and_complete() -> None:
    """config.example.yaml parses and names every key the config tree knows."""
    import dataclasses

    from duvo_monitor import config as cfg
    from duvo_monitor.sinks import config as sink_cfg

    path = Path(__file__).parent.parent / "config.example.yaml"
    load_config(path)
    text = path.read_text()
    classes = [
        cfg.ApiConfig,
        cfg.WatchConfig,
        cfg.DiscoverConfig,
        cfg.StateConfig,
        cfg.MetricsConfig,
        cfg.PollingConfig,
        cfg.LoggingConfig,
        cfg.ControlConfig,
        sink_cfg.SinkConfig,
        sink_cfg.StdoutConfig,
        sink_cfg.FileConfig,
        sink_cfg.WebhookConfig,
    ]
    missing = [
        f"{c.__name__}.{f.name}"
        for c in classes
        for f in dataclasses.fields(c)
        if f"{f.name}:" not in text
    ]
    assert not missing


def test_problems_keep_their_wording() -> None:
    """Each kind of problem reads as check-config has always printed it, in the file's order."""
    assert problems(
        {
            "api": [],
            "watch": {"runs": "x", "discover": {"agents": [RUN, 3], "since": "-"}},
            "state": {"path": ""},
            "polling": {"workers": 0, "sweep": "x"},
            "oops": 1,
        }
    ) == [
        "api: expected a mapping, got list",
        "watch.discover.agents[1]: not a uuid: 3",
        "watch.discover.since: not a duration (use 250ms, 10s, 2m, 1h or seconds): '-'",
        "watch.runs: expected a list, got str",
        "state.path: expected a non-empty string, got str ''",
        "polling.sweep: expected one of auto, on, off, got 'x'",
        "polling.workers: expected a whole number >= 1, got 0",
        "oops: unknown key",
    ]
