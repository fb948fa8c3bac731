"""Where secrets come from (systemd credentials, environment, file) and how they stay unprinted."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import pytest

from duvo_monitor.credentials import CredentialError, Secret, read_secret, require_secret

VALUE = "duvo_sk_live_0123456789abcdef"


@pytest.fixture
def creds_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "duvo-api-key").write_text("from-systemd\n")
    return directory


def test_systemd_credential_wins_over_environment_and_file(creds_dir: Path, tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY/<name> is read first, before the environment and the file."""
    key_file = tmp_path / "api-key"
    key_file.write_text("from-file")
    secret = read_secret(
        "duvo-api-key",
        environ={"CREDENTIALS_DIRECTORY": str(creds_dir), "DUVO_API_KEY": "from-env"},
        env_var="DUVO_API_KEY",
        file=str(key_file),
    )
    assert secret == Secret("from-systemd")


def test_environment_is_used_when_systemd_has_no_such_credential(
    creds_dir: Path, tmp_path: Path
) -> None:
    """A credential systemd did not load falls through to the environment, then the file."""
    key_file = tmp_path / "token"
    key_file.write_text("from-file\n")
    environ = {"CREDENTIALS_DIRECTORY": str(creds_dir), "CONTROL_TOKEN": "from-env"}
    secret = read_secret("control-token", environ=environ, env_var="CONTROL_TOKEN")
    assert secret == Secret("from-env")
    from_file = read_secret(
        "control-token", environ={"CREDENTIALS_DIRECTORY": str(creds_dir)}, file=str(key_file)
    )
    assert from_file == Secret("from-file")


def test_nothing_anywhere_is_none_and_require_secret_names_every_place(tmp_path: Path) -> None:
    """An absent optional secret is None; a required one is an error listing where it looked."""
    assert read_secret("webhook-secret", environ={}, env_var="DUVO_WEBHOOK_SECRET") is None
    with pytest.raises(CredentialError) as info:
        require_secret("webhook-secret", environ={}, env_var="DUVO_WEBHOOK_SECRET")
    message = str(info.value)
    assert "'webhook-secret': not found" in message
    assert "$CREDENTIALS_DIRECTORY (unset)" in message
    assert "$DUVO_WEBHOOK_SECRET" in message
    assert info.value.name == "webhook-secret"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("abc\n", "abc"),
        ("abc\r\n", "abc"),
        ("abc\n\n", "abc\n"),
        ("abc", "abc"),
        (" abc ", " abc "),
    ],
    ids=["lf", "crlf", "only-one", "none", "spaces-kept"],
)
def test_exactly_one_trailing_newline_is_stripped(tmp_path: Path, raw: str, value: str) -> None:
    """echo and editors add one newline; anything else is part of the secret."""
    path = tmp_path / "secret"
    path.write_bytes(raw.encode())
    secret = read_secret("s", environ={}, file=str(path))
    assert secret is not None
    assert secret.reveal() == value


def test_a_configured_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    """Someone configured the file, so its absence is reported rather than treated as unset."""
    missing = tmp_path / "nope"
    with pytest.raises(CredentialError, match=r"does not exist \(looked in: .*nope\)"):
        read_secret("duvo-api-key", environ={}, file=str(missing))


@pytest.mark.parametrize("where", ["credentials", "env", "file"])
def test_an_empty_secret_is_an_error_naming_its_source(tmp_path: Path, where: str) -> None:
    """An empty key is never what the operator meant, wherever it came from."""
    (tmp_path / "k").write_text("\n")
    environ = {"K": ""}
    if where == "credentials":
        environ["CREDENTIALS_DIRECTORY"] = str(tmp_path)
    with pytest.raises(CredentialError, match="is empty"):
        read_secret(
            "k",
            environ=environ,
            env_var="K" if where != "file" else None,
            file=str(tmp_path / "k") if where == "file" else None,
        )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    """A permission problem is reported with the path and the reason."""
    path = tmp_path / "k"
    path.write_text(VALUE)
    path.chmod(0)
    with pytest.raises(CredentialError, match="cannot be read"):
        read_secret("k", environ={}, file=str(path))


def test_a_directory_in_place_of_the_file_is_an_error(tmp_path: Path) -> None:
    """Reading fails with a CredentialError naming the path, also as root."""
    with pytest.raises(CredentialError, match=r"cannot be read \(Is a directory\)"):
        read_secret("k", environ={}, file=str(tmp_path))


def test_errors_never_contain_the_value(tmp_path: Path) -> None:
    """Not UTF-8 or otherwise broken, the message and its chain never quote the secret."""
    path = tmp_path / "k"
    path.write_bytes(VALUE.encode() + b"\xff\xfe")
    with pytest.raises(CredentialError) as info:
        read_secret("k", environ={}, file=str(path))
    assert "is not UTF-8" in str(info.value)
    rendered = [str(info.value), repr(info.value), repr(info.value.__cause__)]
    rendered.append(repr(info.value.__context__))
    assert all(VALUE not in text for text in rendered)


def test_secret_is_redacted_everywhere_it_could_be_printed() -> None:
    """repr, str, f-strings and containers all show Secret('***'); reveal() gives the value."""
    secret = Secret(VALUE)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        repr([secret]),
        str({"k": secret}),
    ]
    assert all(VALUE not in text for text in shown)
    assert repr(secret) == str(secret) == "Secret('***')"
    assert secret.reveal() == VALUE


def test_secret_equality_is_by_value_and_never_with_a_plain_string() -> None:
    """Two Secrets compare by value (constant time); a Secret never equals a str."""
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("ä") == Secret("ä")  # compare_digest refuses non-ASCII str: bytes are compared
    assert Secret("a") != "a"


def test_secret_cannot_be_hashed_or_pickled_but_can_be_copied() -> None:
    """A hash or a pickle would carry the value (or a fingerprint of it) out of the object."""
    secret = Secret(VALUE)
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    assert copy.copy(secret) is secret
    assert copy.deepcopy({"key": secret})["key"] is secret


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../etc/passwd"])
def test_a_credential_name_cannot_escape_the_credentials_directory(name: str) -> None:
    """Names are single path components, so a config value cannot read an arbitrary file."""
    with pytest.raises(ValueError, match="not a credential name"):
        read_secret(name, environ={"CREDENTIALS_DIRECTORY": "/run/credentials/x"})


def test_every_secret_read_is_registered_for_log_redaction(tmp_path: Path) -> None:
    """Whatever the source, a secret read here is redacted from every later log line, with no
    further step for the caller to forget (the webhook signing secret once was never shown to
    the redactor)."""
    import io
    import logging

    import structlog

    from duvo_monitor.logs import configure_logging, forget_secrets

    (tmp_path / "hook").write_text("whsec_from_a_file_0123456789\n")
    environ = {"WEBHOOK_SECRET": "whsec_from_the_env_abcdef"}
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging("debug", json=True, stream=out)
        from_env = require_secret("webhook-secret", environ=environ, env_var="WEBHOOK_SECRET")
        from_file = require_secret("webhook-secret", environ={}, file=str(tmp_path / "hook"))
        for secret in (from_env, from_file):
            structlog.get_logger("t").debug("leak", detail=f"value {secret.reveal()}")
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        forget_secrets()
    logged = out.getvalue()
    assert logged.count("***") == 2
    assert "from_the_env" not in logged and "from_a_file" not in logged
