"""The webhook sink: events POSTed to a URL, spooled on disk first, signed, retried, in order.

::

    deliver(batch) ──append+fsync──▶ Spool ──read──▶ window (in memory, oldest first)
         │ (ack = durably spooled)                        │ claim: one run at a time
         ▼                                                ▼
    fan-out acknowledges                      `concurrency` posters ──POST──▶ receiver
                                                          │ 2xx: ack in the spool
                                                          │ 408/429/5xx/timeout: back off, retry
                                                          │ other 4xx / horizon passed: dead letter
                                                          └ 410: dead letter, endpoint disabled

Order: a run's events are never in flight in two requests at once, and a poster takes a run's
events oldest first, so one run's events arrive strictly in order, while different runs go out
in parallel. With ``batch_size > 1`` a request carries a JSON array of up to that many events
(several runs' events may share one; each run's stay in order), waiting at most
``batch_max_wait`` for a batch to fill.

Retries: exponential backoff with full jitter up to ``max_backoff``; ``Retry-After`` on 429 and
503 is honoured. An event that could not be delivered within ``retry_horizon`` of being spooled
goes to the dead-letter file. Everything is at least once: an event may arrive twice (after a
crash between the receiver's 2xx and our ack), always with the same ``webhook-id``.

Every background task lives in :meth:`WebhookSink.run`, which the fan-out starts in its task
group; nothing is fire-and-forget. The spool survives restarts, so :meth:`close` leaves
unposted events on disk for the next start.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import httpx
import orjson
import structlog
from anyio.abc import TaskStatus

from duvo_monitor.clock import Clock
from duvo_monitor.credentials import Secret
from duvo_monitor.events import Event
from duvo_monitor.sinks.backoff import Backoff, parse_retry_after
from duvo_monitor.sinks.base import SinkObserver, SinkState, SinkUnavailable
from duvo_monitor.sinks.config import WebhookConfig
from duvo_monitor.sinks.deadletter import DeadLetters
from duvo_monitor.sinks.file import errno_kind
from duvo_monitor.sinks.signing import Signer, batch_id
from duvo_monitor.sinks.spool import Record, Spool
from duvo_monitor.sinks.wakeup import Signal

log = structlog.get_logger("duvo_monitor.sinks.webhook")

USER_AGENT = "duvo-monitor"
RETRY_STATUSES = frozenset({408, 429})
ACK_SYNC_INTERVAL = 1.0
RESPONSE_SNIPPET = 200
RESPONSE_READ_CAP = 64 * 1024
DEFAULT_WINDOW = 1000
RECORD_OVERHEAD = 32  # "<seq> <time> " per spooled line


@dataclass(frozen=True, slots=True, kw_only=True)
class _Item:
    seq: int
    spooled_at: float
    line: bytes
    id: str
    type: str
    run: str

    @classmethod
    def from_record(cls, record: Record) -> _Item:
        envelope = orjson.loads(record.line)
        return cls(
            seq=record.seq,
            spooled_at=record.spooled_at,
            line=record.line,
            id=str(envelope.get("id", "")),
            type=str(envelope.get("type", "")),
            run=str(envelope.get("subject", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    status: int | None
    kind: str  # bounded metric label
    detail: str  # for logs and dead letters
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        status = self.status
        return status is None or status >= 500 or status in RETRY_STATUSES


class WebhookSink:
    def __init__(
        self,
        config: WebhookConfig,
        *,
        spool_path: str,
        dead_letter_path: str,
        secret: Secret | None,
        clock: Clock,
        observer: SinkObserver,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        window: int | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.config = config
        self.spool_path = spool_path
        self.dead_letter_path = dead_letter_path
        self._signer = Signer(secret) if secret is not None else None
        self._clock = clock
        self._observer = observer
        self._client = client
        self._own_client = client is None
        self._rng = rng or random.Random()
        # webhook-timestamp is checked against the receiver's real clock, so it is wall time
        # even when the monitor runs on a compressed test clock.
        self._wall = wall
        self._backoff = Backoff(initial=min(1.0, config.max_backoff), maximum=config.max_backoff)
        self._window = window or max(DEFAULT_WINDOW, 2 * config.batch_size * config.concurrency)
        self._spool = Spool(spool_path, max_bytes=config.spool_max)
        self._dead = DeadLetters(dead_letter_path, sink=self.name)
        self._headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **dict(config.headers),
        }
        self._loaded: dict[int, _Item] = {}  # read from the spool, not yet claimed; seq order
        self._busy: set[str] = set()  # runs with a request in flight
        self._inflight = 0
        self._retrying = 0
        self._disabled = False
        self._work = Signal()  # something became claimable
        self._more = Signal()  # the spool grew or the window has room
        self._room = Signal()  # the spool freed disk space
        parts = urllib.parse.urlsplit(config.url)
        # Never log the whole URL: its path or query may carry a token.
        self._log = log.bind(sink=self.name, endpoint=f"{parts.scheme}://{parts.netloc}")

    @property
    def state(self) -> SinkState:
        if self._disabled:
            return "failed"
        return "retry" if self._retrying else "ok"

    @property
    def backlog(self) -> int:
        """Events spooled and not yet posted (or dead-lettered)."""
        return self._spool.pending

    async def open(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._spool.open)
        except OSError as exc:
            raise SinkUnavailable(
                f"cannot open the spool {self.spool_path}: {exc}",
                sink=self.name,
                kind=errno_kind(exc),
            ) from exc
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout))
        if self._spool.pending:
            self._log.info("resuming spooled events", pending=self._spool.pending)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_loop)
            for _ in range(self.config.concurrency):
                tg.start_soon(self._post_loop)
            tg.start_soon(self._sync_loop)
            task_status.started()

    async def close(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._spool.close)
        except OSError as exc:
            self._log.error("closing the spool failed", error=str(exc))
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def reopen(self) -> None:
        pass

    # --- accepting events -------------------------------------------------------------------

    async def deliver(self, batch: Sequence[Event]) -> None:
        """Acknowledge once the batch is fsynced in the spool (or dead-lettered when disabled)."""
        if not batch:
            return
        lines = [event.line for event in batch]
        if self._disabled:
            await self._dead_letter(lines, "endpoint disabled after HTTP 410 Gone", 410, 0)
            return
        size = sum(len(line) + RECORD_OVERHEAD for line in lines)
        while not self._spool.has_room(size):
            if self.config.on_full == "drop_oldest":
                await self._drop_oldest(size)
                break
            room = self._room.waiter()
            self._log.warning("spool full; waiting for the receiver", spool_bytes=self._spool.size)
            await room.wait()
        try:
            await anyio.to_thread.run_sync(self._spool.append, lines, self._clock.time())
        except OSError as exc:
            raise SinkUnavailable(
                f"cannot spool: {exc}", sink=self.name, kind=errno_kind(exc)
            ) from exc
        self._more.notify()

    async def _drop_oldest(self, size: int) -> None:
        dropped = await anyio.to_thread.run_sync(self._spool.drop_oldest, size)
        for seq in dropped:
            self._loaded.pop(seq, None)
        if dropped:
            self._observer.sink_dropped(self.name, "spool_full", len(dropped))
            self._log.warning(
                "spool full; dropped the oldest spooled events",
                count=len(dropped),
                first_seq=dropped[0],
                last_seq=dropped[-1],
            )
            self._room.notify()
            self._more.notify()

    # --- background -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Keep the in-memory window filled from the spool, oldest first."""
        while True:
            more = self._more.waiter()
            room = self._window - len(self._loaded) - self._inflight
            if room > 0:
                records = await anyio.to_thread.run_sync(self._spool.read, room)
                if records:
                    for record in records:
                        self._loaded[record.seq] = _Item.from_record(record)
                    self._work.notify()
                    continue
            await more.wait()

    async def _sync_loop(self) -> None:
        while True:
            await self._clock.sleep(ACK_SYNC_INTERVAL)
            try:
                await anyio.to_thread.run_sync(self._spool.sync)
            except OSError as exc:
                self._log.error("syncing spool acks failed", error=str(exc))

    async def _post_loop(self) -> None:
        while True:
            batch = await self._claim()
            try:
                await self._send(batch)
            finally:
                self._inflight -= len(batch)
                for item in batch:
                    self._busy.discard(item.run)
                self._work.notify()
                self._more.notify()

    def _claimable(self, limit: int) -> int:
        count = 0
        for item in self._loaded.values():
            if item.run not in self._busy:
                count += 1
                if count >= limit:
                    break
        return count

    async def _claim(self) -> list[_Item]:
        size = self.config.batch_size
        deadline: float | None = None
        while True:
            work = self._work.waiter()
            available = self._claimable(size)
            if available >= size:
                break
            if available:
                now = anyio.current_time()
                if deadline is None:
                    deadline = now + self._clock.wall(self.config.batch_max_wait)
                if now >= deadline:
                    break
                with anyio.move_on_after(deadline - now):
                    await work.wait()
            else:
                await work.wait()
        batch: list[_Item] = []
        runs: set[str] = set()
        for item in self._loaded.values():
            if item.run in self._busy and item.run not in runs:
                continue
            batch.append(item)
            runs.add(item.run)
            if len(batch) >= size:
                break
        for item in batch:
            del self._loaded[item.seq]
        self._busy |= runs
        self._inflight += len(batch)
        return batch

    # --- one request ------------------------------------------------------------------------

    async def _send(self, batch: list[_Item]) -> None:
        """Post ``batch`` until it is accepted or dead-lettered. The one delivery boundary."""
        ids = [item.id for item in batch]
        msg_id = batch_id(ids)
        if self.config.batch_size == 1:
            body = batch[0].line.rstrip(b"\n")
        else:
            body = b"[" + b",".join(item.line.rstrip(b"\n") for item in batch) + b"]"
        oldest = min(item.spooled_at for item in batch)
        lines = [item.line for item in batch]
        attempts = 0
        retrying = False
        try:
            while True:
                if self._disabled:
                    reason = "endpoint disabled after HTTP 410 Gone"
                    await self._dead_letter(lines, reason, 410, attempts)
                    break
                outcome = await self._post(msg_id, body)
                attempts += 1
                if outcome.ok:
                    break
                self._observer.sink_error(self.name, outcome.kind)
                if outcome.status == 410:
                    self._disabled = True
                    self._log.error(
                        "the endpoint answered 410 Gone; disabled, events now go to dead letters",
                        dead_letter_path=self.dead_letter_path,
                    )
                    await self._dead_letter(lines, outcome.detail, 410, attempts)
                    break
                if not outcome.retryable:
                    await self._dead_letter(lines, outcome.detail, outcome.status, attempts)
                    break
                if self._clock.time() - oldest >= self.config.retry_horizon:
                    reason = f"retry horizon passed after {attempts} attempts; {outcome.detail}"
                    await self._dead_letter(lines, reason, outcome.status, attempts)
                    break
                if not retrying:
                    retrying = True
                    self._retrying += 1
                delay = self._backoff.delay(
                    attempts - 1, self._rng, retry_after=outcome.retry_after
                )
                self._log.warning(
                    "webhook delivery failed; retrying",
                    error=outcome.detail,
                    attempt=attempts,
                    delay=round(delay, 3),
                    events=len(batch),
                )
                await self._clock.sleep(delay)
        finally:
            if retrying:
                self._retrying -= 1
        if retrying:
            self._log.info("webhook delivery works again", attempts=attempts)
        await self._ack(batch)

    async def _post(self, msg_id: str, body: bytes) -> _Outcome:
        assert self._client is not None, "open() first"
        headers = dict(self._headers)
        timestamp = int(self._wall())
        if self._signer is not None:
            headers.update(self._signer.headers(msg_id, timestamp, body))
        else:
            headers.update({"webhook-id": msg_id, "webhook-timestamp": str(timestamp)})
        timeout = self.config.timeout
        request = self._client.build_request(
            "POST", self.config.url, content=body, headers=headers, timeout=timeout
        )
        try:
            with anyio.fail_after(timeout):
                response = await self._client.send(request, stream=True)
                try:
                    snippet = await _read_snippet(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(status=None, kind="timeout", detail=f"no answer within {timeout}s")
        except httpx.TransportError as exc:
            return _Outcome(status=None, kind="connect", detail=f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome(status=status, kind="ok", detail="")
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now=self._clock.time()
            )
        detail = f"HTTP {status}"
        if snippet:
            detail = f"{detail}: {snippet}"
        return _Outcome(
            status=status, kind=_status_kind(status), detail=detail, retry_after=retry_after
        )

    async def _ack(self, batch: list[_Item]) -> None:
        try:
            freed = await anyio.to_thread.run_sync(self._spool.ack, [i.seq for i in batch])
        except OSError as exc:
            # The events went out; a lost ack only sends them again after a restart.
            self._log.error("recording spool acks failed", error=str(exc))
            return
        if freed:
            self._room.notify()

    async def _dead_letter(
        self, lines: Sequence[bytes], reason: str, status: int | None, attempts: int
    ) -> None:
        """Write dead letters, retrying a failing disk; the events count as dropped."""
        attempt = 0
        while True:
            try:
                await anyio.to_thread.run_sync(
                    lambda: self._dead.write(
                        lines,
                        reason=reason,
                        status=status,
                        attempts=attempts,
                        now=self._clock.time(),
                    )
                )
                break
            except OSError as exc:
                self._observer.sink_error(self.name, errno_kind(exc))
                delay = self._backoff.delay(attempt, self._rng)
                self._log.error("cannot write dead letters; retrying", error=str(exc), delay=delay)
                attempt += 1
                await self._clock.sleep(delay)
        self._observer.sink_dropped(self.name, "dead_letter", len(lines))
        self._log.error(
            "events dead-lettered",
            count=len(lines),
            reason=reason,
            status=status,
            dead_letter_path=self.dead_letter_path,
        )


def _status_kind(status: int) -> str:
    if status >= 500:
        return "http_5xx"
    if status in (408, 410, 429):
        return f"http_{status}"
    return "http_4xx" if status >= 400 else "http_other"


async def _read_snippet(response: httpx.Response) -> str:
    """Read (a bounded part of) the body, so the connection can be reused; a short snippet."""
    data = bytearray()
    async for chunk in response.aiter_raw():
        data.extend(chunk)
        if len(data) >= RESPONSE_READ_CAP:
            break
    if 200 <= response.status_code < 300:
        return ""
    text = bytes(data[:RESPONSE_SNIPPET]).decode("utf-8", "replace")
    return " ".join(text.split())
