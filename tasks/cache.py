"""On-disk cache of trained task models and their recorded online-measure trajectories.

One entry is one ``.npz`` file holding the model's weights (``weight/<i>``), the recorder's state
(``recorder/<key>``) and a JSON manifest (``manifest``): the full cache key, the training history
and a SHA-256 checksum over every stored array (name, dtype, shape and bytes).

* **Key**: task name and version, model variant, seed, training settings, recorded online
  measures and the TensorFlow / Keras / NumPy versions (:func:`cache_key`). The file name carries
  a hash of it, so a changed key is simply a miss and the model is retrained.
* **Atomic writes**: written to a temporary file in the same directory, flushed, then moved into
  place with ``os.replace``; readers never see a half-written entry.
* **One trainer per entry** (:func:`entry_lock`): a process that misses takes an exclusive
  ``fcntl.flock`` on ``.<entry>.lock`` beside the entry, then looks again before training, so two
  processes (pytest-xdist workers, two users' runs) never train the same model at once: the second
  waits and reads what the first wrote. The holder removes the lock file when it is done; a lock
  dies with its process, so a killed run leaves no stale lock. Waiting longer than
  ``$IMPORTANCE_BENCH_CACHE_LOCK_TIMEOUT`` seconds (default 3600) raises :class:`CacheLockTimeout`
  naming the lock file. Where no lock can be taken (no ``fcntl``, a read-only folder) the model
  is trained without one, with a :class:`CacheWarning` saying so.
* **Shared folders**: an entry is created with the mode a plain ``open`` gives (``0o666`` minus
  the umask), plus read permission for the group and others where the cache folder grants them,
  so everyone who may list a shared folder may read its entries. An entry this user may not read
  (e.g. ``0600``, written by another user before this rule) raises
  :class:`CacheEntryUnreadable` naming the file, its owner and its mode: it is never retrained
  (and overwritten) silently.
* **Corruption**: an entry that cannot be read, fails its checksum, holds another key or does not
  fit the model is reported with a :class:`CacheWarning` and rebuilt, never used.

Location: ``$IMPORTANCE_BENCH_CACHE``, default ``~/.cache/importance-bench``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "IMPORTANCE_BENCH_CACHE"
LOCK_TIMEOUT_ENV = "IMPORTANCE_BENCH_CACHE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 3600.0  # seconds: longer than any task of the full study takes to train
FORMAT_VERSION = 1

logger = logging.getLogger("tasks.run")  # the training lines' logger: waiting is part of training


class CacheWarning(UserWarning):
    """A cache entry was unreadable, corrupt or inconsistent and is being rebuilt, or could not
    be written or locked."""


class CacheLockTimeout(TimeoutError):
    """Another process held a cache entry's lock (it is training that model) for too long."""


class CacheEntryUnreadable(PermissionError):
    """A cache entry exists but this user may not read it (another user's private file)."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``path``, else ``$IMPORTANCE_BENCH_CACHE``, else the default."""
    if path is None:
        path = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "importance-bench")
    return Path(os.path.expanduser(str(path)))


def cache_key(
    task: Any, variant: str, seed: int, settings: dict[str, Any], measures: list[str] | None
) -> dict[str, Any]:
    """Everything a cached model depends on, as a JSON-able dict."""
    import keras
    import tensorflow as tf

    return {
        "format": FORMAT_VERSION,
        "task": task.name,
        "task_version": task.version,
        "variant": variant,
        "seed": int(seed),
        "training": dict(sorted(settings.items())),
        "measures": None if measures is None else sorted(measures),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def entry_path(directory: Path, key: dict[str, Any]) -> Path:
    """File of the entry for ``key`` inside ``directory``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return directory / f"{key['task']}-{key['variant']}-seed{key['seed']}-{digest}.npz"


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path: Path, key: dict[str, Any], model: Any, recorder: Any, history: dict[str, Any]) -> None:
    """Write an entry atomically (temporary file in the same directory, then ``os.replace``).

    A failure to write (read-only disk, full disk) is reported with a :class:`CacheWarning`.
    """
    arrays = {f"weight/{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    if recorder is not None:
        arrays.update({f"recorder/{k}": np.asarray(v) for k, v in recorder.state_dict().items()})
    manifest = {"key": key, "history": history, "checksum": checksum(arrays), "arrays": sorted(arrays)}
    arrays["manifest"] = np.array(json.dumps(manifest, sort_keys=True))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not tempfile.mkstemp: its 0600 would make the entry private in a shared folder.
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        _share_like_folder(fd, path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        warnings.warn(f"Could not write cache entry {path}: {error}", CacheWarning, stacklevel=2)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def load(path: Path, key: dict[str, Any], model: Any, recorder: Any) -> dict[str, Any] | None:
    """Restore an entry into ``model`` (and ``recorder``) and return its history.

    Returns:
        The stored history, or None when there is no entry (a miss) or the entry is invalid
        (then a :class:`CacheWarning` says why and the model is left untouched).

    Raises:
        CacheEntryUnreadable: The entry exists but this user may not read it.
    """
    if not path.exists():
        return None
    try:
        arrays, manifest = _read(path)
        problem = _check(arrays, manifest, key, model, recorder)
    except PermissionError as error:
        raise CacheEntryUnreadable(_unreadable_message(path, error)) from error
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        problem = f"unreadable ({type(error).__name__}: {error})"
    if problem is not None:
        warnings.warn(f"Ignoring cache entry {path}: {problem}. Retraining.", CacheWarning, stacklevel=2)
        return None
    model.set_weights([arrays[f"weight/{i}"] for i in range(len(model.weights))])
    if recorder is not None:
        recorder.load_state_dict({k[len("recorder/"):]: v for k, v in arrays.items() if k.startswith("recorder/")})
    return manifest["history"]


def load_or_train(path: Path, key: dict[str, Any], model: Any, recorder: Any,
                  fit: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The entry's history loaded into ``model`` (and ``recorder``), else ``fit()`` run and saved.

    A hit takes no lock (entries are replaced atomically). A miss takes the entry's lock
    (:func:`entry_lock`) and looks again, so of several processes missing at once one trains
    and the others read its entry.

    Args:
        path: The entry (:func:`entry_path`).
        key: Its key (:func:`cache_key`).
        model: The freshly built model the entry is loaded into, or that ``fit`` trains.
        recorder: Its recorder (or None).
        fit: Trains ``model`` in place and returns the history to store.

    Returns:
        ``(history, from_cache)``.

    Raises:
        CacheEntryUnreadable: The entry exists but this user may not read it.
        CacheLockTimeout: Another process held the entry's lock too long.
    """
    seen = stamp(path)
    history = load(path, key, model, recorder)
    if history is not None:
        return history, True
    with entry_lock(path):
        if stamp(path) not in (None, seen):  # written while this process waited
            history = load(path, key, model, recorder)
            if history is not None:
                return history, True
        history = fit()
        save(path, key, model, recorder, history)
    return history, False


def stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of the file now at ``path`` (device, inode, modification time), None if absent:
    a changed stamp means another process wrote the entry."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def lock_path(path: Path) -> Path:
    """The lock file of the entry ``path``: ``.<entry name>.lock`` beside it."""
    return path.parent / f".{path.name}.lock"


def lock_timeout() -> float:
    """Seconds to wait for an entry's lock: ``$IMPORTANCE_BENCH_CACHE_LOCK_TIMEOUT`` or 3600.

    Raises:
        ValueError: The variable is set to something other than a number >= 0.
    """
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds >= 0. Received: {text!r}")
    return value


@contextlib.contextmanager
def entry_lock(path: Path, *, timeout: float | None = None) -> Iterator[bool]:
    """Hold the exclusive lock of the entry ``path`` (an ``fcntl.flock`` on :func:`lock_path`).

    Waits while another process holds it, polling, for at most ``timeout`` seconds
    (:func:`lock_timeout` when None). The holder removes the lock file before releasing it; a
    waiter that then holds a removed file's lock notices (its inode is no longer the path's) and
    takes the new one, so two holders never overlap.

    Yields:
        True while holding the lock; False when no lock could be taken (no ``fcntl`` on this
        platform, or the folder or lock file is not writable or readable: a :class:`CacheWarning`
        says so), and the caller goes on without it.

    Raises:
        CacheLockTimeout: The lock stayed held for ``timeout`` seconds; the message names the
            lock file.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock; atomic writes still hold
        yield False
        return
    timeout = lock_timeout() if timeout is None else float(timeout)
    lock = lock_path(path)
    deadline = time.monotonic() + timeout
    waited = False
    fd = None
    while fd is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write access
        except OSError as error:
            warnings.warn(f"Could not lock cache entry {path} ({type(error).__name__}: {error}); "
                          "training without the lock: another process may train the same model "
                          "at the same time.", CacheWarning, stacklevel=3)
            yield False
            return
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise CacheLockTimeout(
                        f"Waited {timeout:g} s for the lock {lock} of cache entry {path.name}: "
                        "another process is training that model (or hangs). Wait for it, raise "
                        f"{LOCK_TIMEOUT_ENV} (seconds), or stop that process.") from None
                if not waited:
                    waited = True
                    logger.info("waiting for %s: another process is training it", path.name)
                time.sleep(delay)
                delay = min(2 * delay, 1.0)
        held = os.fstat(fd)
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            os.close(fd)  # the previous holder removed this file: lock the one now at the path
            fd = None
    try:
        with contextlib.suppress(OSError):
            _share_like_folder(fd, path.parent)
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it (see above)
        os.close(fd)


def _share_like_folder(fd: int, folder: Path) -> None:
    """Add read permission for the group and others to the file ``fd`` where ``folder`` grants
    them (a shared cache folder), on top of the umask's mode. Only a file this user owns (one it
    just created) is changed."""
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        return
    extra = os.stat(folder).st_mode & (stat.S_IRGRP | stat.S_IROTH)
    if extra & ~st.st_mode:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | extra)


def _unreadable_message(path: Path, error: OSError) -> str:
    try:
        st = os.stat(path)
        try:
            import pwd

            owner = pwd.getpwuid(st.st_uid).pw_name
        except (ImportError, KeyError):
            owner = f"uid {st.st_uid}"
        facts = f"owner {owner}, mode {stat.filemode(st.st_mode)} ({oct(stat.S_IMODE(st.st_mode))})"
    except OSError:
        facts = "owner and mode unknown"
    return (f"Cache entry {path} exists but this user may not read it ({facts}; {error.strerror}). "
            "It is not retrained silently: ask its owner to make it readable "
            f"(chmod a+r {path}), or use a cache folder of your own ({CACHE_ENV}=...), or "
            "train without the cache (cache=False).")


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    manifest = json.loads(str(arrays.pop("manifest")))
    return arrays, manifest


def _check(arrays: dict[str, np.ndarray], manifest: dict[str, Any], key: dict[str, Any], model: Any, recorder: Any) -> str | None:
    """Why the entry must not be used, or None when it is valid for ``model``."""
    if manifest.get("key") != key:
        return "it was written for another key"
    if sorted(arrays) != manifest.get("arrays") or checksum(arrays) != manifest.get("checksum"):
        return "checksum mismatch (corrupt or partial file)"
    for i, w in enumerate(model.weights):
        stored = arrays.get(f"weight/{i}")
        if stored is None or stored.shape != tuple(w.shape):
            return f"weight {i} is missing or has another shape"
    if len([k for k in arrays if k.startswith("weight/")]) != len(model.weights):
        return "it holds a different number of weights"
    if recorder is not None:
        for name, value in recorder.state_dict().items():
            stored = arrays.get(f"recorder/{name}")
            if stored is None or stored.shape != np.shape(value):
                return f"recorded state {name!r} is missing or has another shape"
    return None
