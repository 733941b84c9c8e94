"""On-disk cache of trained task models and their recorded online-measure trajectories.

One entry is one ``.npz`` file holding the model's weights (``weight/<i>``), the recorder's state
(``recorder/<key>``) and a JSON manifest (``manifest``): the full cache key, the training history
and a SHA-256 checksum over every stored array (name, dtype, shape and bytes).

* **Key**: task name and version, model variant, seed, training settings, recorded online
  measures and the TensorFlow / Keras / NumPy versions (:func:`cache_key`). The file name carries
  a hash of it, so a changed key is simply a miss and the model is retrained.
* **Atomic writes**: written to a temporary file in the same directory, flushed, then moved into
  place with ``os.replace``; readers never see a half-written entry.
* **Corruption**: an entry that cannot be read, fails its checksum, holds another key or does not
  fit the model is reported with a :class:`CacheWarning` and rebuilt, never used.

Location: ``$IMPORTANCE_BENCH_CACHE``, default ``~/.cache/importance-bench``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "IMPORTANCE_BENCH_CACHE"
FORMAT_VERSION = 1


class CacheWarning(UserWarning):
    """A cache entry was unreadable, corrupt or inconsistent and is being rebuilt."""


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    """
    if not path.exists():
        return None
    try:
        arrays, manifest = _read(path)
        problem = _check(arrays, manifest, key, model, recorder)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        problem = f"unreadable ({type(error).__name__}: {error})"
    if problem is not None:
        warnings.warn(f"Ignoring cache entry {path}: {problem}. Retraining.", CacheWarning, stacklevel=2)
        return None
    model.set_weights([arrays[f"weight/{i}"] for i in range(len(model.weights))])
    if recorder is not None:
        recorder.load_state_dict({k[len("recorder/"):]: v for k, v in arrays.items() if k.startswith("recorder/")})
    return manifest["history"]


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
