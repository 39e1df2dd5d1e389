"""Where step results persist, and who may run a step (private to the executor).

A step's result is keyed by execution id + step id + a hash of its resolved
inputs + a hash of its action's code, never by call order. It is written as
JSON (`PlainJSONSerializer`: data only, nothing is imported or constructed on
reading); a value JSON cannot hold is pickled only when the executor allows it
(`result_serializer="pickle"`), under keys that hold the random execution id.
Reading checks the record's declared serializer against what is allowed before
decoding anything, so a planted file cannot make us unpickle it.

`ProcessLockManager` is a Prefect `LockManager` over `fcntl.flock`: the lock
around "is there a result? else run and write it" keeps two processes resuming
the same execution from both running a step, and the operating system releases
it when its holder dies (a SIGKILLed run never blocks the resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import inspect
import json
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal, cast

import pydantic_core
from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
from prefect.filesystems import LocalFileSystem
from prefect.locking.filesystem import FileSystemLockManager
from prefect.locking.protocol import LockManager
from prefect.results import ResultStore, aresolve_result_storage
from prefect.serializers import PickleSerializer, Serializer
from prefect.utilities.hashing import hash_objects

from prefect_aether.exceptions import ExecutionError

try:  # POSIX; elsewhere Prefect's own file lock manager (no release on a crash).
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MISSING",
    "PlainJSONSerializer",
    "ProcessLockManager",
    "StepResults",
    "code_hash",
    "private_dir",
]

MISSING: Any = object()
_JSON = "aether-json"


class PlainJSONSerializer(Serializer):  # type: ignore[type-arg]
    """JSON of plain data: models and dataclasses are written as their fields, and read
    back as dicts and lists (Prefect's parameter validation turns them into models)."""

    type: Literal["aether-json"] = "aether-json"

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(
            pydantic_core.to_jsonable_python(obj), separators=(",", ":"), allow_nan=False
        ).encode()

    def loads(self, blob: bytes) -> Any:
        return json.loads(blob)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) as a folder only its owner can enter (0700).

    A folder that is a symbolic link, or that another user made (in a shared
    `PREFECT_LOCAL_STORAGE_PATH`, say), is refused: results and locks written there would
    go where that user chose, or be theirs to read and forge.

    Raises:
        ExecutionError: `path` is a symbolic link, not a folder, or not ours.
    """
    path = path.expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.lstat()
    problem = (
        "is a symbolic link"
        if stat.S_ISLNK(info.st_mode)
        else "is not a folder"
        if not stat.S_ISDIR(info.st_mode)
        else f"belongs to another user (uid {info.st_uid})"
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid()
        else None
    )
    if problem is not None:
        raise ExecutionError(
            f"{path} {problem}; step results and locks are kept only in a folder of this "
            "user's (remove it, or set PREFECT_LOCAL_STORAGE_PATH to a folder of yours)"
        )
    path.chmod(0o700)
    return path


def owner_only(path: Path) -> None:
    """Make an existing folder of this user's private to them (0700); leave anything
    else (missing, a symbolic link, another user's) as it is."""
    try:
        info = path.lstat()
    except OSError:
        return
    mine = not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
    if stat.S_ISDIR(info.st_mode) and mine and info.st_mode & 0o077:
        path.chmod(0o700)


class ProcessLockManager(LockManager):
    """Per-key exclusive locks held with `flock` on files in a private folder.

    A lock is held by an open file: a second process (or a second acquisition in this
    one) waits; a holder that dies releases it. `hold_timeout` is not needed for that
    and is ignored.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = private_dir(directory)
        self._held: dict[str, tuple[int, str]] = {}

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.lock"

    def _try(self, key: str, holder: str) -> bool:
        path = self._path(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # The last holder unlinks the file as it lets go: when it did so between our
            # open and our lock, we hold a file no one else will open; retry on the path.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._held[key] = (fd, holder)
        return True

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._try(key, holder):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._try(key, holder):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        held = self._held.get(key)
        if held is None or held[1] != holder:
            raise ValueError(f"{holder!r} does not hold the lock on {key!r}")
        del self._held[key]
        # Unlinked before it is unlocked (see `_try`), so lock files do not pile up.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))
        fcntl.flock(held[0], fcntl.LOCK_UN)
        os.close(held[0])

    def is_locked(self, key: str) -> bool:
        if key in self._held:
            return True
        try:
            fd = os.open(self._path(key), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock taken just now
        return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        held = self._held.get(key)
        return held is not None and held[1] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True


_INLINE_BYTES = 256 * 1024


async def _in_thread_if_large(fn: Callable[..., Any], *args: Any, size: int | None = None) -> Any:
    """`fn(*args)` here when the file is small (a thread hop costs more than the I/O),
    in a worker thread when it is large (or, when reading, of unknown size)."""
    if size is None:
        try:
            size = args[0].stat().st_size
        except OSError:
            size = 0
    if size <= _INLINE_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(temporary, path)


def code_hash(fn: Callable[..., Any] | None, fallback: str) -> str:
    """Hash of a function's source (as Prefect's `TASK_SOURCE` cache policy reads it);
    its bytecode when the source is unavailable; `fallback` for no function."""
    if fn is None:
        return hashlib.sha256(fallback.encode()).hexdigest()[:16]
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = code.co_code.hex() if code is not None else fallback
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def inputs_hash(inputs: dict[str, Any]) -> str:
    """Hash of a step's resolved inputs: of their canonical JSON when they are JSON data
    (a tenth of the cost of Prefect's `hash_objects`), else as Prefect hashes objects."""
    try:
        text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        digest = hash_objects(inputs) or hash_objects(repr(inputs)) or ""
        return digest[:32]
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class StepResults:
    """Step results of executions in one result storage.

    Args:
        storage: A Prefect storage block or slug; None for a private folder in
            Prefect's local storage (`PREFECT_LOCAL_STORAGE_PATH/aether-results`,
            0700, files 0600).
        allow_pickle: Pickle values JSON cannot hold (and read pickled records).
    """

    def __init__(self, storage: Any = None, *, allow_pickle: bool = False) -> None:
        self.storage = storage
        self.allow_pickle = allow_pickle
        self._store: ResultStore | None = None
        self._folder: Path | None = None
        self._json = PlainJSONSerializer()
        self._pickle = PickleSerializer(picklelib="cloudpickle")

    async def store(self) -> ResultStore:
        if self._store is None:
            from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

            local = Path(str(PREFECT_LOCAL_STORAGE_PATH.value())).expanduser()
            # Prefect writes persisted results there with the process's umask (a failed
            # run's pickled error, 0644): the folder itself is kept private to its owner.
            owner_only(local)
            if self.storage is None:
                self._folder = private_dir(local / "aether-results")
                block: Any = LocalFileSystem(basepath=str(self._folder))
            else:
                block = await aresolve_result_storage(self.storage)
            # Locks are files on this machine: processes sharing it exclude each other.
            locks = local / "aether-locks"
            manager: LockManager = (
                ProcessLockManager(locks)
                if fcntl is not None
                else FileSystemLockManager(lock_files_directory=private_dir(locks))
            )
            self._store = ResultStore(
                result_storage=block, serializer=self._json, lock_manager=manager
            )
        return self._store

    @property
    def folder(self) -> Path | None:
        """The private folder results are written to, when we chose it (after `store`)."""
        return self._folder

    @contextlib.asynccontextmanager
    async def locked(self, *keys: str) -> AsyncIterator[str]:
        """Hold the locks of `keys` (in sorted order, so two holders never deadlock);
        yields the holder name that `write` needs while they are held."""
        store = await self.store()
        holder = f"{socket.gethostname()}:{os.getpid()}:{id(asyncio.current_task())}"
        taken: list[str] = []
        try:
            for key in sorted(set(keys)):
                await store.aacquire_lock(key, holder=holder)
                taken.append(key)
            yield holder
        finally:
            for key in reversed(taken):
                store.release_lock(key, holder=holder)

    async def read(self, key: str, *, shared: bool = False) -> Any:
        """The value stored under `key`, or `MISSING` (also for an expired record, or
        one whose serializer is not allowed: it is never decoded; a `shared` key is
        read as JSON only)."""
        store = await self.store()
        try:
            if self._folder is not None:
                raw = await _in_thread_if_large(Path.read_bytes, self._folder / key)
            else:
                block = store.result_storage
                assert block is not None
                raw = await block.read_path(key)  # type: ignore[union-attr]
        except (OSError, ValueError):
            return MISSING
        try:
            record = json.loads(raw)
            metadata = record["metadata"]
            kind = metadata["serializer"]["type"]
            blob = record["result"]
        except (ValueError, TypeError, KeyError):
            return MISSING
        if kind not in ({_JSON, "pickle"} if self.allow_pickle and not shared else {_JSON}):
            return MISSING
        expiration = metadata.get("expiration")
        if expiration and dt.datetime.fromisoformat(expiration) <= dt.datetime.now(dt.timezone.utc):
            return MISSING
        if not isinstance(blob, str):
            return MISSING
        serializer = self._json if kind == _JSON else self._pickle
        try:
            return serializer.loads(blob.encode())
        except Exception:
            return MISSING

    async def write(
        self,
        key: str,
        value: Any,
        *,
        holder: str,
        expires: dt.datetime | None = None,
        shared: bool = False,
    ) -> bool:
        """Persist `value` under `key`; False when it is not JSON data and pickle is not
        allowed (the step then simply is not reused). A `shared` key (no execution id in
        it, so predictable) is never given a pickle."""
        store = await self.store()
        serializer: Serializer[Any] = self._json
        try:
            self._json.dumps(value)
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
            if not self.allow_pickle or shared:
                return False
            serializer = self._pickle
        if self._folder is None:
            writer = store.model_copy(update={"serializer": serializer})
            record = writer.create_result_record(value, key=key, expiration=cast(Any, expires))
            await writer.apersist_result_record(record, holder=holder)
            return True
        # Our private folder: the same record Prefect writes, without its three path
        # resolutions, lock-file probe and thread hop per write (3 ms a step); written
        # to a temporary file and renamed, so a reader never sees half a record.
        if not store.is_lock_holder(key, holder):
            raise RuntimeError(f"cannot write result {key!r}: its lock is not held by {holder!r}")
        path = self._folder / key
        record = ResultRecord(
            result=value,
            metadata=ResultRecordMetadata(
                serializer=serializer,
                expiration=cast(Any, expires),
                storage_key=str(path),
                storage_block_id=None,
            ),
        )
        data = record.serialize()
        if not path.parent.is_dir():
            private_dir(path.parent)
        await _in_thread_if_large(_write_private, path, data, size=len(data))
        return True
