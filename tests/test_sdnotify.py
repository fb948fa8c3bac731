"""The sd_notify client, against a real AF_UNIX datagram socket that the test opens."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from duvo_monitor.sdnotify import MAX_STATUS_CHARS, Notifier, watchdog_loop


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """The service manager's end: a bound datagram socket, read without blocking the test."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # spelled as NOTIFY_SOCKET spells it

    def recv(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536).decode()

    def drain(self) -> list[str]:
        self.sock.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return messages


@pytest.fixture
def short_tmp() -> Iterator[str]:
    # sun_path holds 108 bytes; pytest's tmp_path can be longer than that on CI runners.
    directory = tempfile.mkdtemp(prefix="sdn-", dir="/tmp" if os.path.isdir("/tmp") else None)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def path_receiver(short_tmp: str) -> Iterator[Receiver]:
    path = os.path.join(short_tmp, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield Receiver(sock, path)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"duvo-monitor-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield Receiver(sock, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    fixture: Receiver = request.getfixturevalue(f"{request.param}_receiver")
    return fixture


def notifier_for(receiver: Receiver, **environ: str) -> Notifier:
    return Notifier.from_environ({"NOTIFY_SOCKET": receiver.address, **environ})


@pytest.mark.parametrize(
    ("call", "payload"),
    [
        (Notifier.ready, "READY=1\n"),
        (Notifier.stopping, "STOPPING=1\n"),
        (Notifier.watchdog, "WATCHDOG=1\n"),
        (
            lambda n: n.status("watching 3 runs; budget 12/60"),
            "STATUS=watching 3 runs; budget 12/60\n",
        ),
    ],
    ids=["ready", "stopping", "watchdog", "status"],
)
def test_each_message_is_one_datagram_in_the_protocol_format(
    receiver: Receiver, call: Callable[[Notifier], bool], payload: str
) -> None:
    """READY/STOPPING/WATCHDOG/STATUS arrive as exact KEY=value lines, path or abstract socket."""
    notifier = notifier_for(receiver)
    assert call(notifier) is True
    assert receiver.recv() == payload


def test_reloading_carries_the_monotonic_timestamp(receiver: Receiver) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC= read from CLOCK_MONOTONIC at the time of the call."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier_for(receiver).reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)\n", receiver.recv())
    assert match is not None
    assert before <= int(match[1]) <= after


def test_notify_sends_all_fields_in_one_datagram_with_upper_cased_keys(
    abstract_receiver: Receiver,
) -> None:
    """notify(**fields) is one message, so systemd applies STATUS and READY together."""
    notifier_for(abstract_receiver).notify(status="up", ready=1)
    assert abstract_receiver.recv() == "STATUS=up\nREADY=1\n"
    assert abstract_receiver.drain() == []


def test_a_newline_in_a_status_cannot_inject_a_field(abstract_receiver: Receiver) -> None:
    """Free text is flattened to one line: 'x\\nREADY=1' must not tell systemd we are ready."""
    notifier_for(abstract_receiver).status("bad run\nREADY=1\r\nSTOPPING=1")
    assert abstract_receiver.recv() == "STATUS=bad run READY=1  STOPPING=1\n"


def test_a_long_status_is_cut_below_what_systemd_would_ignore(abstract_receiver: Receiver) -> None:
    """systemd drops a whole datagram of 4096 bytes or more, so STATUS is truncated instead."""
    notifier_for(abstract_receiver).status("é" * 10_000)
    payload = abstract_receiver.recv()
    assert payload.startswith("STATUS=éé")
    assert payload.endswith("…\n")
    assert len(payload) == len("STATUS=\n") + MAX_STATUS_CHARS
    assert len(payload.encode()) < 4096


def test_a_malformed_field_name_is_a_programming_error() -> None:
    """A key that systemd could not parse is refused loudly, even outside systemd."""
    with pytest.raises(ValueError, match="sd_notify field name"):
        Notifier().notify(**{"status=x": "y"})


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"NOTIFY_SOCKET": ""},
        {"NOTIFY_SOCKET": "relative/notify"},
        {"WATCHDOG_USEC": "30000000"},
    ],
    ids=["unset", "empty", "relative", "watchdog-without-socket"],
)
def test_outside_systemd_every_call_is_a_silent_no_op(environ: dict[str, str]) -> None:
    """Without a usable NOTIFY_SOCKET nothing is sent, nothing raises, and there is no watchdog."""
    notifier = Notifier.from_environ(environ)
    assert notifier.enabled is False
    assert notifier.watchdog_interval() is None
    for send in (notifier.ready, notifier.stopping, notifier.reloading, notifier.watchdog):
        assert send() is False
    assert notifier.status("x") is False


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "1"}, 0.0000005),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
    ],
    ids=["usec", "own-pid", "other-pid", "tiny", "unset", "empty", "zero", "negative", "garbage"],
)
def test_watchdog_interval_is_half_the_period_and_only_for_the_named_pid(
    environ: dict[str, str], interval: float | None
) -> None:
    """Half of WATCHDOG_USEC in seconds; None when unset, malformed or meant for another pid."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@x", **environ}, pid=4242)
    assert notifier.watchdog_interval() == interval


def test_watchdog_pid_is_compared_with_this_process_by_default() -> None:
    """Without an injected pid the notifier compares WATCHDOG_PID with os.getpid()."""
    environ = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000"}
    assert Notifier.from_environ({**environ, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval()
    other = Notifier.from_environ({**environ, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval() is None


@pytest.mark.anyio
async def test_the_watchdog_loop_pings_then_sleeps_one_interval(receiver: Receiver) -> None:
    """Each WATCHDOG=1 is followed by a sleep of exactly half of WATCHDOG_USEC, until cancelled."""
    notifier = notifier_for(receiver, WATCHDOG_USEC="30000000")
    slept: list[float] = []
    third_sleep = anyio.Event()

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            third_sleep.set()
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(watchdog_loop, notifier, clock_sleep=fake_sleep))
            await third_sleep.wait()
            tg.cancel_scope.cancel()

    assert slept == [15.0, 15.0, 15.0]
    assert receiver.drain() == ["WATCHDOG=1\n"] * 3


@pytest.mark.anyio
async def test_a_blocked_event_loop_stops_the_pings(abstract_receiver: Receiver) -> None:
    """Pings come from the event loop at a small real interval and stop while it is wedged."""
    notifier = notifier_for(abstract_receiver, WATCHDOG_USEC="20000")  # a ping every 10 ms
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watchdog_loop, notifier)
            await anyio.sleep(0.1)
            assert len(abstract_receiver.drain()) >= 2

            time.sleep(0.1)  # noqa: ASYNC251 -- the wedge under test: nothing else can run.
            assert abstract_receiver.drain() == []

            await anyio.sleep(0.1)
            assert len(abstract_receiver.drain()) >= 1
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_watchdog_loop_returns_at_once_when_systemd_wants_no_pings() -> None:
    """Without WatchdogSec= the loop ends immediately instead of holding a task for nothing."""
    quiet = Notifier.from_environ({"NOTIFY_SOCKET": "@x"})
    assert quiet.watchdog_interval() is None
    assert Notifier().watchdog_interval() is None
    with anyio.fail_after(1):
        await watchdog_loop(quiet)
        await watchdog_loop(Notifier())


def test_a_vanished_socket_never_raises_and_is_logged_once(path_receiver: Receiver) -> None:
    """With the manager's socket gone, sends return False and log one warning, not one each."""
    notifier = notifier_for(path_receiver)
    path_receiver.sock.close()
    os.unlink(path_receiver.address)
    with capture_logs() as logs:
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.status("still here") is False
    assert len(logs) == 1
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["notify_socket"] == path_receiver.address
    assert "FileNotFoundError" in logs[0]["error"]


def test_an_abstract_name_nobody_listens_on_never_raises() -> None:
    """A refused connection on an abstract socket is swallowed like any other OSError."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": f"@nobody-{uuid.uuid4().hex}"})
    with capture_logs() as logs:
        assert notifier.watchdog() is False
    assert [entry["notify_socket"][:8] for entry in logs] == ["@nobody-"]


def test_a_manager_that_does_not_read_cannot_block_the_sender(
    abstract_receiver: Receiver,
) -> None:
    """With the receiver's queue full, sends fail at once (non-blocking) instead of hanging."""
    notifier = notifier_for(abstract_receiver)
    results: list[bool] = []

    def flood() -> None:
        results.extend(notifier.watchdog() for _ in range(5000))

    sender = threading.Thread(target=flood, daemon=True)
    with capture_logs():
        sender.start()
        sender.join(timeout=10)
    assert not sender.is_alive(), "sending blocked on a full notify socket"
    assert True in results
    assert False in results


def test_malformed_watchdog_variables_are_logged_not_raised() -> None:
    """A garbled WATCHDOG_USEC disables the watchdog with a warning; the service still starts."""
    with capture_logs() as logs:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "soon"})
    assert notifier.watchdog_interval() is None
    assert logs == [
        {
            "event": "Ignoring a malformed systemd variable.",
            "variable": "WATCHDOG_USEC",
            "value": "soon",
            "log_level": "warning",
        }
    ]
