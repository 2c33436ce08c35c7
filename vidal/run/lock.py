"""One writer per output folder: the lock that `vidal build`, `run`, `refilter`, `dedup`,
`crawl` and `export` take on their output before writing anything.

Local disks: `OUT/work/lock.json`, opened and held with `flock` for the life of the process,
so a killed holder never leaves a stale lock (the kernel drops it); the file says who holds it.
Object stores (s3://, gs://, ...) have no locks: there the file is written only where none is
(best effort: two writers racing within the same second can both win), refreshed every
`HEARTBEAT_S` by the holder, and taken over when it is older than `STALE_AFTER_S` or its
holder's process is gone from this host.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid

LOCK_NAME = "work/lock.json"
EXPORT_LOCK_NAME = ".vidal-lock.json"  # an export's destination has no work/ folder
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
WRITERS = {"build": "out", "run": "out", "refilter": "out", "dedup": "out", "crawl": "out"}


class OutputLocked(RuntimeError):
    """Another vidal process writes this output; the message is one sentence saying who."""


def lock_for_command(args) -> contextlib.AbstractContextManager:
    """The lock a CLI command needs on the folder it writes (none for read-only commands)."""
    if args.command in WRITERS:
        return out_lock(getattr(args, WRITERS[args.command]), args.command)
    if args.command == "export":
        return out_lock(args.to, "export", EXPORT_LOCK_NAME)
    return contextlib.nullcontext()


@contextlib.contextmanager
def out_lock(out: str, command: str, name: str = LOCK_NAME):
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, root = fsspec.core.url_to_fs(out)
    path = f"{root.rstrip('/')}/{name}"
    owner = _owner(command)
    if isinstance(fs, LocalFileSystem):
        with _local_lock(path, owner, out):
            yield owner
    else:
        with _store_lock(fs, path, owner, out):
            yield owner


def _owner(command: str) -> dict:
    return {
        "command": command,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "time": time.time(),
        "token": uuid.uuid4().hex,
    }


def _refusal(out: str, path: str, holder: dict | None) -> OutputLocked:
    who = "another vidal process"
    if holder:
        who = (
            f"vidal {holder.get('command')} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started')})"
        )
    return OutputLocked(
        f"{out} is being written by {who}; wait for it to finish, or if that process is gone "
        f"(not running on its host any more), delete {path} and rerun"
    )


@contextlib.contextmanager
def _local_lock(path: str, owner: dict, out: str):
    import fcntl

    created = _missing_dirs(os.path.dirname(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refusal(out, path, _read_local(path)) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed it between our open and our lock: try again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        os.fsync(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before unlocking, so nobody locks a file that is going away
        os.close(fd)
        for folder in created:  # a job that wrote nothing (a bad config) leaves no folder
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _missing_dirs(folder: str) -> list[str]:
    """The folders makedirs(folder) will create, deepest first."""
    missing = []
    while folder and not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_local(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read() or b"null")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _store_lock(fs, path: str, owner: dict, out: str):
    holder = _read_store(fs, path)
    if holder and not _stale(holder):
        raise _refusal(out, path, holder)
    _write_store(fs, path, owner)
    if (_read_store(fs, path) or {}).get("token") != owner["token"]:
        raise _refusal(out, path, _read_store(fs, path))  # another writer won the race
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(fs, path, owner, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        if (_read_store(fs, path) or {}).get("token") == owner["token"]:
            with contextlib.suppress(OSError):
                fs.rm(path)


def _stale(holder: dict) -> bool:
    if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
        return True
    return time.time() - float(holder.get("time") or 0) > STALE_AFTER_S


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _read_store(fs, path: str) -> dict | None:
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read() or b"null")
    except (FileNotFoundError, ValueError):
        return None


def _write_store(fs, path: str, owner: dict) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(json.dumps(owner).encode())


def _heartbeat(fs, path: str, owner: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            _write_store(fs, path, {**owner, "time": time.time()})
