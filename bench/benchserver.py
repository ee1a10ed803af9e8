"""The application under uvicorn in a process of its own, for the benchmarks that load it over HTTP
(login, in-car, OCPI), and what they read of it: its CPU time and page faults, a profile, the CPU of
the PostgreSQL backends serving it."""

from __future__ import annotations

import cProfile
import multiprocessing
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from benchdb import free_port
from sqlalchemy import Engine, text

from onboarding.core.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The server's settings from (database URL, base URL). A module-level function: the child process
# (spawned) imports it by name.
MakeSettings = Callable[[str, str], Settings]
# Made in the child before the application (to wrap what it measures), answering the bench's other
# messages than "stop" on the pipe.
MakeReplies = Callable[[], Callable[[str], object]]


@dataclass(frozen=True)
class ProcStat:
    """A process's CPU seconds in user and kernel mode and minor page faults (all its threads)."""

    user: float = 0.0
    system: float = 0.0
    faults: int = 0

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def __sub__(self, other: ProcStat) -> ProcStat:
        return ProcStat(self.user - other.user, self.system - other.system, self.faults - other.faults)

    def __add__(self, other: ProcStat) -> ProcStat:
        return ProcStat(self.user + other.user, self.system + other.system, self.faults + other.faults)


def process_stat(pid: int) -> ProcStat:
    """From ``/proc/<pid>/stat``: fields 10 (minflt), 14 (utime) and 15 (stime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return ProcStat(int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS, int(fields[7]))


class PostgresBackends:
    """CPU of the PostgreSQL backends connected to the bench database (other than this one)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: dict[int, float] = {}

    def __call__(self) -> float:
        with self.engine.connect() as conn:
            pids = conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        for pid in pids:
            with suppress(OSError):
                self.seen[pid] = process_stat(pid).cpu
        return sum(self.seen.values())


def _serve(
    make_settings: MakeSettings,
    make_replies: MakeReplies | None,
    database_url: str,
    port: int,
    profile: str | None,
    conn: Connection,
) -> None:
    """Child process: the application under uvicorn on 127.0.0.1:port until told "stop" on ``conn``;
    with ``profile``, every thread's cProfile (thread CPU time) merged into that file at the end."""
    import uvicorn

    from onboarding.ops.app import create_app

    replies = make_replies() if make_replies else None
    app = create_app(make_settings(database_url, f"http://127.0.0.1:{port}"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    def answer() -> None:
        with suppress(EOFError, OSError):
            while (message := conn.recv()) != "stop":
                conn.send(replies(message) if replies else None)
        server.should_exit = True

    threading.Thread(target=answer, daemon=True).start()
    profiles: list[cProfile.Profile] = []
    if profile:
        lock = threading.Lock()

        def start_thread_profile(frame: Any, event: str, arg: Any) -> None:
            # Called once in each new thread (the request threads): swap in a profiler of its own.
            sys.setprofile(None)
            profiler = cProfile.Profile(time.thread_time)
            with lock:
                profiles.append(profiler)
            profiler.enable()

        threading.setprofile(start_thread_profile)
        main_profile = cProfile.Profile(time.thread_time)
        profiles.append(main_profile)
        main_profile.enable()
    conn.send("starting")
    server.run()
    if profile:
        threading.setprofile(None)
        main_profile.disable()
        stats = pstats.Stats(profiles[0])
        for extra in profiles[1:]:
            stats.add(extra)
        stats.dump_stats(profile)


class AppServer:
    """The server process, started (answering /healthz) and stopped by the bench."""

    def __init__(
        self,
        make_settings: MakeSettings,
        database_url: str,
        profile: Path | None,
        make_replies: MakeReplies | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve,
            args=(
                make_settings,
                make_replies,
                database_url,
                self.port,
                str(profile) if profile else None,
                child,
            ),
        )
        self.process.start()
        assert self.process.pid is not None
        self.pid = self.process.pid
        if not self._conn.poll(60) or self._conn.recv() != "starting":
            raise RuntimeError("the server process did not start")
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError("the server did not answer /healthz")
            time.sleep(0.1)

    def stat(self) -> ProcStat:
        return process_stat(self.pid)

    def ask(self, message: str) -> object:
        """The server's ``make_replies`` answer to ``message``."""
        self._conn.send(message)
        return self._conn.recv()

    def close(self) -> None:
        """Graceful stop (the profile, if any, is written after uvicorn returns)."""
        with suppress(OSError):
            self._conn.send("stop")
        self.process.join(60)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)


def split(items: range, parts: int) -> list[range]:
    """``items`` in ``parts`` consecutive pieces of (nearly) equal size."""
    size, extra = divmod(len(items), parts)
    pieces, start = [], items.start
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        pieces.append(range(start, end))
        start = end
    return pieces


def shares(total: int, parts: int) -> list[int]:
    return [len(piece) for piece in split(range(total), parts)]


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def print_profile(path: Path, *, cumulative: int = 50) -> None:
    print(f"  profile of the server process written to {path}; top functions by own time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(cumulative)
