"""Request lines are written in batches, not a system call each: on a short timer, with the next other line (any
other line is written at once), and at shutdown (app/observability.py BufferedLines). That none is lost to SIGTERM
is shown on the real service in tests/test_faults.py."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest

from app.observability import BufferedLines


class Pipe:
    """The write end of an OS pipe as a text stream (what a container's log collector reads), and what it holds."""

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.stream = os.fdopen(write_fd, "w")
        self.writes = 0
        write = self.stream.write

        def counted(text: str) -> int:
            self.writes += 1
            return write(text)

        self.stream.write = counted  # type: ignore[method-assign]

    def lines(self) -> list[str]:
        try:
            return os.read(self.read_fd, 1 << 20).decode().splitlines()
        except BlockingIOError:
            return []

    def close(self) -> None:
        self.stream.close()
        os.close(self.read_fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    pipe = Pipe()
    yield pipe
    pipe.close()


def loggers_to(handler: BufferedLines) -> tuple[logging.Logger, logging.Logger]:
    """A logger whose lines the handler batches (as the request lines) and one whose lines it does not."""
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    loggers = []
    for name in (f"test.requests.{id(handler)}", f"test.other.{id(handler)}"):
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.handlers = [handler]
        loggers.append(logger)
    handler.batched = frozenset([loggers[0].name])
    return loggers[0], loggers[1]


def test_info_lines_wait_for_the_timer_and_go_out_in_one_write(pipe: Pipe) -> None:
    handler = BufferedLines(pipe.stream, interval=0.3)
    requests, _ = loggers_to(handler)
    try:
        for number in range(50):
            requests.info("request %d", number)
        assert pipe.lines() == []  # nothing written yet
        deadline = time.monotonic() + 5
        lines: list[str] = []
        while len(lines) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
            lines += pipe.lines()
        assert lines == [f"INFO request {number}" for number in range(50)]
        assert pipe.writes == 1
    finally:
        handler.close()


def test_other_lines_and_warnings_are_written_at_once_with_the_lines_before_them(pipe: Pipe) -> None:
    handler = BufferedLines(pipe.stream, interval=3600)  # the timer never fires in this test
    requests, other = loggers_to(handler)
    try:
        requests.info("first")
        assert pipe.lines() == []
        other.info("shutting down")  # e.g. uvicorn's, after which its process may end by a signal
        assert pipe.lines() == ["INFO first", "INFO shutting down"]
        requests.info("second")
        requests.warning("a request line at WARNING")
        assert pipe.lines() == ["INFO second", "WARNING a request line at WARNING"]
        requests.info("third")
        other.error("broken")
        assert pipe.lines() == ["INFO third", "ERROR broken"]
    finally:
        handler.close()


def test_closing_writes_what_is_pending_and_a_full_buffer_does_not_wait(pipe: Pipe) -> None:
    handler = BufferedLines(pipe.stream, interval=3600, capacity=10)
    requests, _ = loggers_to(handler)
    for number in range(10):
        requests.info("line %d", number)
    assert len(pipe.lines()) == 10  # the tenth filled the buffer
    requests.info("last")
    assert pipe.lines() == []
    handler.close()  # what logging.shutdown does at exit, and the app's on_shutdown hook before it
    assert pipe.lines() == ["INFO last"]
    assert handler.writer is not None
    handler.writer.join(timeout=5)
    assert not handler.writer.is_alive()  # the writer thread ends with its handler
