"""Output paths: never the input, one writer at a time, and no temp file outliving its writer."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from pvar.errors import InputError, resolved


def cache_dir() -> Path:
    """Where converted models and cached prompt lists live: `$PVAR_CACHE`, else `~/.cache/pvar`."""
    env = os.environ.get("PVAR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pvar"

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"  # temp names are ".NAME.tmp-PID" beside their target


def temp_path(target: Path) -> Path:
    """The temp name a writer of ``target`` uses (hidden, beside it, tagged with our PID)."""
    return target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}")


def _same(a: Path, b: Path) -> bool:
    if resolved(a) == resolved(b):  # resolve() follows symlinks, also for a missing final part
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_output(source: str | Path, output: str | Path, *also: str | Path) -> None:
    """Refuse an output (or a folder written beside it) that is the input itself.

    Writing the output would replace the input before it has been read in full, so ``select`` would
    destroy its input and ``generate`` would overwrite its prompts. Symlinks and hard links count.
    """
    if not isinstance(source, str | Path) or not isinstance(output, str | Path):
        return  # rows in memory (the notebook API) cannot be overwritten by a file
    src = Path(source)
    if not src.exists():
        return
    for out in (Path(output), *map(Path, also)):
        if _same(src, out):
            raise InputError(str(output), f"the output is the input {str(source)!r}; write to another path")
        if src.is_file() and out.is_dir() and resolved(src).is_relative_to(resolved(out)):
            raise InputError(str(output), f"the output folder holds the input {str(source)!r}; write elsewhere")


def refuse_foreign(folder: Path, marker: str, what: str) -> None:
    """Refuse to write into ``folder`` when it is a file, or a non-empty folder without ``marker``.

    A stage or a run owns only folders it made (they hold its marker file); anything else at that
    path is the user's, and ``--force`` must not delete it either.
    """
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / marker).is_file())):
        kind = "a file" if not folder.is_dir() else f"a folder that is not {what} (no {marker})"
        raise InputError(str(folder), f"the output is {kind}; it is never overwritten: choose another path")


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Exclusive advisory lock on ``path``, removed again on release.

    A second process waits, then finds the first one's work done (a stage resumes from its
    manifest). The lock file is unlinked while held; a waiter that then wins a lock on the removed
    file sees that its path now names another (or no) file and locks again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")  # noqa: SIM115 (closed below on every path)
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("waiting for another process writing %s", what)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            handle.close()
            raise
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        handle.close()


def remove_stale_temps(folder: Path, prefix: str = "", *, recursive: bool = False) -> int:
    """Delete temp files (``.NAME.tmp-PID``) in ``folder`` whose name starts with ``.PREFIX``.

    Call only while holding the lock of whatever writes there: every such file is then left
    over from a killed writer. Returns how many were removed.
    """
    if not folder.is_dir():
        return 0
    removed = 0
    pattern = f".{prefix}*{TEMP_MARK}*"
    for stale in list(folder.rglob(pattern) if recursive else folder.glob(pattern)):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed += 1
    return removed
