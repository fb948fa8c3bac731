"""Which Duvo API the one-shot commands talk to: the target, resolved in one place.

``watch``, ``start``, ``send``, ``respond`` and ``stop`` take the API's address, version, team and
request budget from four layers, first hit wins::

    flag (--base-url)  >  environment (DUVO_API_URL)  >  --config file (api.base_url)  >  default

The config file and the defaults arrive together as an :class:`~duvo_monitor.config.ApiConfig`
(a file that leaves a key out holds the default there), so resolving is: that, overridden by the
environment, overridden by the flags. Pure: no I/O; the environment is passed in.

A bad value is a :class:`TargetError` (a ``ValueError``, so the CLI exits 2) whose one-line
message names where the value came from (``--api-version`` or ``$DUVO_API_VERSION``), because
"v3 is not a version" is only useful next to the place to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, cast

from duvo_monitor.config import ApiConfig
from duvo_monitor.ids import is_uuid

URL_ENV = "DUVO_API_URL"
VERSION_ENV = "DUVO_API_VERSION"
TEAM_ENV = "DUVO_TEAM_ID"
VERSIONS = ("v1", "v2")


class TargetError(ValueError):
    """A flag or environment variable holds a value the API settings cannot take."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetFlags:
    """The command-line flags as given (None: not given)."""

    base_url: str | None = None
    api_version: str | None = None
    team_id: str | None = None
    requests_per_minute: str | None = None


def resolve_target(api: ApiConfig, flags: TargetFlags, environ: Mapping[str, str]) -> ApiConfig:
    """``api`` (the config file over the defaults), then the environment, then the flags."""
    api = _override(
        api,
        url=(f"${URL_ENV}", environ.get(URL_ENV)),
        version=(f"${VERSION_ENV}", environ.get(VERSION_ENV)),
        team=(f"${TEAM_ENV}", environ.get(TEAM_ENV)),
    )
    return _override(
        api,
        url=("--base-url", flags.base_url),
        version=("--api-version", flags.api_version),
        team=("--team-id", flags.team_id),
        # The budget has no environment variable: it belongs to the key, set where the key is.
        per_minute=("--requests-per-minute", flags.requests_per_minute),
    )


Layer = tuple[str, str | None]
"""(where the value came from, the value or None when that layer does not set it)"""


def _override(
    api: ApiConfig,
    *,
    url: Layer,
    version: Layer,
    team: Layer,
    per_minute: Layer = ("", None),
) -> ApiConfig:
    if (value := url[1]) is not None:
        api = replace(api, base_url=_url(url[0], value))
    if (value := version[1]) is not None:
        api = replace(api, version=_version(version[0], value))
    if (value := team[1]) is not None:
        api = replace(api, team_id=_team(team[0], value))
    if (value := per_minute[1]) is not None:
        api = replace(api, requests_per_minute=_per_minute(per_minute[0], value))
    return api


def _url(source: str, value: str) -> str:
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.split("/", 1)[0]:
        raise TargetError(source, f"expected an http(s) URL, got {value!r}")
    return text.rstrip("/")


def _version(source: str, value: str) -> Literal["v1", "v2"]:
    text = value.strip().lower()
    if text not in VERSIONS:
        raise TargetError(source, f"expected v1 or v2, got {value!r}")
    return cast(Literal["v1", "v2"], text)


def _team(source: str, value: str) -> str:
    text = value.strip()
    if not is_uuid(text):
        raise TargetError(source, f"not a uuid: {value!r}")
    return text.lower()


def _per_minute(source: str, value: str) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise TargetError(source, f"expected a whole number >= 1, got {value!r}")
    return int(text)


__all__ = [
    "TEAM_ENV",
    "URL_ENV",
    "VERSION_ENV",
    "TargetError",
    "TargetFlags",
    "resolve_target",
]
