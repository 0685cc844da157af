"""One writer per run folder: an OS file lock on `RUN/.lock`, held for as long as a command works in
the folder, so that a second `unmask train` (or `eval`, `sample`) on the same folder is refused in
one line naming the holder instead of deleting the first one's checkpoint mid-write.

    with hold(run_dir):        # refused at once if another process holds it
        ...train, evaluate...

The lock is `fcntl.flock` on an open file: the kernel drops it when the holder exits, however it
dies, so a lock left by a dead process is simply taken over (the file stays; its content, the
holder's PID, host and start time, is only for the message). Holding is re-entrant within one
process (a recipe that trains a teacher in `RUN/teacher` while holding `RUN` works). Under torchrun
only rank 0 writes into the folder, so only rank 0 takes the lock. Where `fcntl` does not exist
(Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from ..errors import UnmaskError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks through this module
    fcntl = None

NAME = ".lock"
_HELD: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth) held by this process


def holder(run_dir: Path) -> str:
    """Who the lock file says holds it (PID, host, since), for messages."""
    try:
        info = json.loads((Path(run_dir) / NAME).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"process {info['pid']} on {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return "another process"


@contextlib.contextmanager
def hold(run_dir: Path, rank: int | None = None):
    """Hold the lock of `run_dir` (created if missing) for the body; refuse at once if another
    process holds it. Only rank 0 locks (`rank` defaults to the RANK environment variable)."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    if fcntl is None or rank != 0:
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = os.open(run_dir / NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UnmaskError(f"run folder {run_dir} is in use by {holder(run_dir)}; wait for it to finish "
                          "or use another --out") from None
    try:
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        _HELD[key] = (fd, 1)
        yield
    finally:
        _HELD.pop(key, None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
