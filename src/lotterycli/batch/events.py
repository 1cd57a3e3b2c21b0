"""What a batch tells its caller (`Events`) and where a running job's progress goes (`Reporter`)."""

from __future__ import annotations

from .spec import Job


class Reporter:
    """Where a running job's progress goes (the batch display, a pipe to the driver, nowhere)."""

    def progress(self):  # a fitting ProgressCallback, with .member(k, n, total) for restoration
        return None

    def note(self, text: str) -> None:
        pass


class Events:
    """What a batch tells its caller (the command line shows it; `api.batch` may listen)."""

    def planned(self, todo: int, skipped: int) -> None:
        pass

    def note(self, text: str) -> None:
        """A choice made on the user's behalf (fewer fits at once for lack of memory)."""

    def started(self, job: Job, slot: int) -> Reporter | None:
        """Job starts on worker `slot`; may return where its progress goes (local jobs)."""
        return None

    def remote(self, slot: int, event: tuple) -> None:
        """A progress event of a worker process's job: ("step", info dict), ("member", k, n, total),
        ("mstep", k, info dict), ("note", text)."""

    def finished(self, job: Job, row: dict, summary: dict | None) -> None:
        pass
