"""The worker: applies the event log, keeps segments current and runs the flows.

Each task is a function ``(engine, clock, settings) -> items done``. ``run_once`` runs every
task until none has work; ``run_forever`` repeats that, resting when idle. Tests and
simulations call ``run_once`` directly after moving their fake clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from tidings.clock import Clock
from tidings.config import Settings
from tidings.events import apply as event_apply
from tidings.flows import listening, runs, scheduled
from tidings.segments import refresh as segments_refresh

log = logging.getLogger(__name__)

Task = Callable[[Engine, Clock, Settings], int]

#: In order: contacts learn from the log, segments follow, then flows react to both
#: (enrol, wake, exit, convert), scheduled triggers enrol, and due runs advance.
TASKS: Sequence[Task] = (
    event_apply.process_pending,
    segments_refresh.refresh,
    listening.process_events,
    scheduled.check_due,
    runs.advance_due,
)


class Worker:
    def __init__(self, settings: Settings, engine: Engine, clock: Clock) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock

    def run_once(self, max_rounds: int = 1000) -> int:
        """Run every task until all are idle (or `max_rounds`); returns the items done."""
        total = 0
        for _ in range(max_rounds):
            done = sum(task(self.engine, self.clock, self.settings) for task in TASKS)
            total += done
            if done == 0:
                break
        return total

    def run_forever(self, stop: threading.Event) -> None:
        """Work until `stop` is set; a failing round is logged and retried after a rest."""
        log.info("worker started")
        while not stop.is_set():
            try:
                done = self.run_once(max_rounds=1)
            except Exception:
                log.exception("worker round failed; retrying")
                done = 0
            if done == 0:
                stop.wait(self.settings.worker_poll_seconds)
        log.info("worker stopped")

    def start_thread(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread beside the API (`tidings serve`)."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run_forever, args=(stop,), name="tidings-worker")
        thread.daemon = True
        thread.start()
        return thread, stop
