"""The results folder: checked before the first build, and claimed by one run at a time.

A run first proves it can write ``--out`` and its team folder (so a measurement is never thrown away because
its record cannot be saved), then holds an exclusive ``flock`` on ``--out/.squeezebench.lock`` for its whole
length: two runs on one folder would build into the same artifact folders, time each other and mix their
records. The kernel drops the lock when its holder dies (even by SIGKILL), so a stale lock file left by a dead
run is simply taken over; the file holds the holder's pid for the message a second run prints.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from squeezebench.errors import SqueezebenchError

LOCK_NAME = ".squeezebench.lock"


def check_team(team: str) -> None:
    """A team name becomes a folder name below --out: it must be a plain name."""
    if team in (".", "..") or not re.fullmatch(r"[\w.-]+", team):  # \w: letters and digits of any script, '_'
        raise SqueezebenchError(f"--team must be a plain name (letters, digits, '-', '_', '.'; not '.', '..' or a "
                                f"path), got {team!r}")


def inside(out: Path, path: Path, what: str) -> Path:
    """``path`` if it stays below ``out`` once every symbolic link on the way is followed, else one line.

    Every path squeezebench writes below --out (run files, logs, artifacts, references) passes here first: a link
    left in --out (a log file, ``artifacts/MODEL``, ``references``, the team folder) must not make a run write its
    files somewhere else on the machine."""
    root = Path(out).resolve()
    real = Path(path).resolve()  # not strict: a dangling link resolves to where it points
    if real != root and root not in real.parents:
        raise SqueezebenchError(f"{what} {str(path)!r} leads outside --out {str(out)!r} (to {str(real)!r}) through "
                                "a symbolic link; remove the link or pass another --out")
    return Path(path)


def inside_tree(out: Path, folder: Path, what: str) -> Path:
    """``inside`` for a folder and everything already in it (a build writes its files into an existing folder)."""
    inside(out, folder, what)
    if Path(folder).is_dir() and not Path(folder).is_symlink():
        for path in Path(folder).rglob("*"):
            inside(out, path, f"{path.name!r} in {what}")
    return Path(folder)


def check_writable(out: Path, team: str) -> None:
    """Create ``out/team`` and write a probe file in both folders; one line naming the problem otherwise."""
    out = Path(out)
    inside(out, out / team, "the team folder")
    for folder in (out, out / team):
        if folder.exists() and not folder.is_dir():
            raise SqueezebenchError(f"--out {str(folder)!r} is a file, not a folder; pass a folder for the results")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise SqueezebenchError(f"cannot write results to {str(folder)!r} ({exc.strerror or exc}); pass a "
                                    "writable --out") from None


@contextmanager
def claim(out: Path, team: str) -> Iterator[None]:
    """Check the folder, then hold its lock for the duration of the block."""
    check_team(team)
    check_writable(out, team)
    path = inside(out, Path(out) / LOCK_NAME, "the lock file")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise SqueezebenchError(f"another squeezebench run (pid {holder}) is using {str(out)!r}; wait for it "
                                    "to finish or pass another --out") from None
        try:  # the pid is only for the message of a second run: a full disk must not stop this one
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        try:
            yield
        finally:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
