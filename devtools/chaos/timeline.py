"""What happened when, during a chaos run, and the failover figures computed from it.

Every time is a time.monotonic() reading (seconds). Events are marked as they happen (a fault
injected, a trigger dispatched, a repair started or finished, redundancy back); the client
probe adds one Sample per attempt. figures() turns one fault's window into the benchmark row.
"""

import dataclasses
import threading
import time

WEB, WRITE = "web", "write"


@dataclasses.dataclass
class Sample:
    """One probe attempt: kind WEB or WRITE, when it started and ended, whether it succeeded;
    seq is the write's sequence number (None for WEB)."""
    kind: str
    started: float
    ended: float
    ok: bool
    detail: str = ""
    seq: int = None


@dataclasses.dataclass
class Event:
    kind: str
    at: float
    fields: dict


class Timeline:
    """Thread-safe: the probe, the sensor loop and the repair threads all write to it."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.started = clock()
        self._events, self._samples = [], []
        self._lock = threading.Lock()

    def mark(self, kind, at=None, **fields):
        event = Event(kind, self.clock() if at is None else at, fields)
        with self._lock:
            self._events.append(event)
        return event

    def add(self, sample):
        with self._lock:
            self._samples.append(sample)

    def events(self, kind=None, start=None, end=None, **match):
        """Events of `kind` marked in [start, end), whose fields include `match`."""
        with self._lock:
            found = list(self._events)
        return [e for e in found if (kind is None or e.kind == kind) and _within(e.at, start, end)
                and all(e.fields.get(k) == v for k, v in match.items())]

    def samples(self, kind=None, start=None, end=None):
        """Samples of `kind` that ended in [start, end). By their end, not their start: a write
        in flight when a fault is injected, which then times out, is that fault's failure. By
        its start it counted in the window before, as that window's last sample, and made the
        earlier fault's service "never" back."""
        with self._lock:
            found = list(self._samples)
        return [s for s in found if (kind is None or s.kind == kind)
                and _within(s.ended, start, end)]

    def committed(self, start=None, end=None):
        """Sequence numbers whose COMMIT returned, for writes that ended in [start, end)."""
        return [s.seq for s in self.samples(WRITE, start, end) if s.ok]


def _within(at, start, end):
    return (start is None or at >= start) and (end is None or at < end)


def back_after(samples, fault_at):
    """Seconds from the fault to the first successful sample after the last failed one
    (0.0 when none failed: the service never stopped answering); None when the failures
    never ended within the samples."""
    failed = [s for s in samples if not s.ok]
    if not failed:
        return 0.0
    last = max(s.started for s in failed)
    after = [s for s in samples if s.ok and s.started > last]
    if not after:
        return None
    return round(min(s.ended for s in after) - fault_at, 1)


@dataclasses.dataclass
class Figures:
    """One row of the failover benchmark. Seconds are from the fault; None: never."""
    fault: str
    host: str
    detected: float
    service_back: float
    redundant: float
    failed_web: int
    failed_writes: int
    committed: int
    lost: int

    def row(self):
        return [self.fault, self.host, _seconds(self.detected), _seconds(self.service_back),
                _seconds(self.redundant), self.failed_web, self.failed_writes, self.committed,
                self.lost]


HEADERS = ["FAULT", "HOST", "DETECTED", "SERVICE BACK", "FULL REDUNDANCY", "FAILED WEB",
           "FAILED WRITES", "COMMITTED", "LOST"]


def _seconds(value):
    return "never" if value is None else "%.1f s" % value


def figures(timeline, fault, host, start, end, found):
    """The figures of the fault injected at `start`, over the window [start, end) (end: the
    next fault, or the end of the run). `found`: the sequence numbers read back from the
    primary at the end; a write committed in the window and not found is lost."""
    downs = timeline.events("trigger", start, end, trigger="dialog.host_down", host=host)
    redundant = timeline.events("redundant", start, end, host=host)
    web = timeline.samples(WEB, start, end)
    writes = timeline.samples(WRITE, start, end)
    backs = [back_after(web, start), back_after(writes, start)]
    committed = timeline.committed(start, end)
    return Figures(
        fault=fault, host=host,
        detected=round(downs[0].at - start, 1) if downs else None,
        service_back=None if None in backs else max(backs),
        redundant=round(redundant[0].at - start, 1) if redundant else None,
        failed_web=sum(1 for s in web if not s.ok),
        failed_writes=sum(1 for s in writes if not s.ok),
        committed=len(committed),
        lost=len(set(committed) - set(found)))
