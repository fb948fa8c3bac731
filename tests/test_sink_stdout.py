"""The stdout sink: lines flushed per batch; a closed pipe (``| head``) ends cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from sinkkit import events

from duvo_monitor.sinks.base import SinkClosed
from duvo_monitor.sinks.config import StdoutConfig
from duvo_monitor.sinks.stdout import StdoutSink

pytestmark = pytest.mark.anyio

CONFIG = StdoutConfig(type="stdout", name="stdout")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_each_batch_is_written_and_flushed() -> None:
    """A delivered batch is readable from the pipe at once (flushed, not left in a buffer)."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        sink = StdoutSink(CONFIG, stream=writer)
        await sink.open()
        batch = events(3)
        await sink.deliver(batch)
        expected = b"".join(e.line for e in batch)
        assert os.read(reader.fileno(), 65536) == expected
        await sink.close()


async def test_closed_pipe_raises_sink_closed_and_silences_the_stream() -> None:
    """EPIPE becomes SinkClosed (permanent), and the descriptor then points at /dev/null."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with os.fdopen(write_fd, "wb") as writer:
        sink = StdoutSink(CONFIG, stream=writer)
        await sink.open()
        with pytest.raises(SinkClosed) as caught:
            await sink.deliver(events(2))
        assert caught.value.permanent
        assert caught.value.sink == "stdout"
        assert sink.state == "failed"
        writer.write(b"more")
        writer.flush()  # no BrokenPipeError: the fd is /dev/null now
        with pytest.raises(SinkClosed):
            await sink.deliver(events(1))
        await sink.close()


SCRIPT = textwrap.dedent(
    """
    import anyio
    from duvo_monitor.clock import Clock
    from duvo_monitor.fanout import FanOut
    from duvo_monitor.sinks.base import NullObserver, SinkClosed
    from duvo_monitor.sinks.config import StdoutConfig
    from duvo_monitor.sinks.stdout import StdoutSink
    from sinkkit import events

    async def main() -> int:
        fanout = FanOut([StdoutSink(StdoutConfig(type="stdout", name="stdout"))],
                        observer=NullObserver(), clock=Clock())
        code = 3  # the reader never went away?

        async def guard(*, task_status) -> None:  # as the daemon does
            nonlocal code
            try:
                await fanout.run(task_status=task_status)
            except SinkClosed:
                code = 0
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            await tg.start(guard)
            for i in range(100_000):
                await fanout.publish(events(10, start=10 * i))
        return code

    raise SystemExit(anyio.run(main))
    """
)


def test_pipe_into_head_ends_cleanly() -> None:
    """``monitor | head -1``: the writer exits 0 with nothing on stderr (no traceback)."""
    here = os.path.dirname(__file__)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.path.dirname(here), here]),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # what `head -1` does after its line
    try:
        stderr = process.stderr.read()
        code = process.wait(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
        process.stderr.close()
    assert first.startswith(b'{"specversion":"1.0"')
    assert stderr == b""
    assert code == 0
