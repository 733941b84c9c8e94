"""The trained-model cache: hit, miss on a changed key, rebuild of corrupt files, atomic writes."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import importance
import tasks
import tasks.trainer
from tasks import cache as cache_module
from tasks import models


def _tiny_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return (x[:60], y[:60]), (x[60:], y[60:])


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registered tiny task, a tmp cache dir (via the env var) and a count of trainings."""
    task = tasks.register_task(
        tasks.Task(
            "test_cache_tiny",
            description="tiny",
            num_classes=2,
            input_shape=(5,),
            load=_tiny_data,
            build=lambda seed, variant: models.mlp((5,), 2, hidden=(4,), seed=seed),
            variants=("mlp", "wide"),
            training=tasks.TrainingSettings(epochs=2, batch_size=16, learning_rate=0.05),
        )
    )
    monkeypatch.setenv(cache_module.CACHE_ENV, str(tmp_path))
    calls = []
    original = tasks.trainer.train

    def counting_train(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tasks.trainer, "train", counting_train)
    yield task, tmp_path, calls
    tasks.unregister_task("test_cache_tiny")


def _entries(directory):
    return sorted(p.name for p in directory.iterdir())


def test_second_run_is_a_hit_and_skips_training(tiny) -> None:
    task, directory, calls = tiny
    first = tasks.trained("test_cache_tiny", seed=3)
    assert not first.from_cache and calls == [3]
    assert first.cache_path and os.path.dirname(first.cache_path) == str(directory)
    second = tasks.trained("test_cache_tiny", seed=3)
    assert second.from_cache and calls == [3]  # measured: the trainer was not called again
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert second.history == first.history
    assert second.history["test_accuracy"] == pytest.approx(
        importance.data.evaluate(second.model, task.test_data())[1]
    )
    state1, state2 = first.recorder.state_dict(), second.recorder.state_dict()
    assert sorted(state1) == sorted(state2) and int(state2["steps"]) == 2 * 4
    for key in state1:
        np.testing.assert_array_equal(state1[key], state2[key])
    assert importance.online.recorder_for(second.model) is second.recorder
    assert (second.task, second.variant, second.seed) == (task, "mlp", 3)


@pytest.mark.parametrize("change", ["seed", "variant", "settings", "tensorflow", "version", "track"])
def test_changed_key_is_a_miss(tiny, monkeypatch, change) -> None:
    task, directory, calls = tiny
    tasks.trained("test_cache_tiny", seed=0, track=change == "track")
    kwargs = {"seed": 0, "track": False}
    if change == "seed":
        kwargs["seed"] = 1
    elif change == "variant":
        kwargs["variant"] = "wide"
    elif change == "settings":
        monkeypatch.setattr(task, "training", tasks.TrainingSettings(epochs=2, batch_size=16, learning_rate=0.01))
    elif change == "tensorflow":
        import tensorflow as tf

        monkeypatch.setattr(tf, "__version__", "9.99.0")
    elif change == "version":
        monkeypatch.setattr(task, "version", "2")
    again = tasks.trained("test_cache_tiny", **kwargs)
    assert not again.from_cache and len(calls) == 2
    assert len([e for e in _entries(directory) if e.endswith(".npz")]) == 2
    if change == "track":
        assert again.recorder is None


def test_truncated_file_is_detected_and_rebuilt(tiny) -> None:
    _, directory, calls = tiny
    first = tasks.trained("test_cache_tiny", seed=0)
    path = first.cache_path
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.warns(tasks.CacheWarning, match="Ignoring cache entry .*Retraining"):
        rebuilt = tasks.trained("test_cache_tiny", seed=0)
    assert not rebuilt.from_cache and len(calls) == 2
    for a, b in zip(first.model.get_weights(), rebuilt.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same weights
    assert os.path.getsize(path) > size // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tasks.trained("test_cache_tiny", seed=0).from_cache  # the rebuilt file is valid


def test_flipped_bytes_and_wrong_key_are_not_used(tiny) -> None:
    _, directory, calls = tiny
    first = tasks.trained("test_cache_tiny", seed=0, track=False)
    with np.load(first.cache_path) as stored:
        arrays = dict(stored)
    arrays["weight/0"] = arrays["weight/0"] + 1.0  # same size, changed contents, stale checksum
    with open(first.cache_path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.warns(tasks.CacheWarning, match="checksum mismatch"):
        again = tasks.trained("test_cache_tiny", seed=0, track=False)
    assert not again.from_cache
    np.testing.assert_array_equal(again.model.get_weights()[0], first.model.get_weights()[0])

    other = tasks.trained("test_cache_tiny", seed=1, track=False)
    os.replace(other.cache_path, first.cache_path)  # an entry holding another key
    with pytest.warns(tasks.CacheWarning, match="another key"):
        assert not tasks.trained("test_cache_tiny", seed=0, track=False).from_cache
    assert len(calls) == 4


def test_cache_off_never_reads_or_writes(tiny) -> None:
    _, directory, calls = tiny
    for _ in range(2):
        run = tasks.trained("test_cache_tiny", seed=0, cache=False, track=False)
        assert not run.from_cache and run.cache_path is None
    assert calls == [0, 0] and _entries(directory) == []


def test_explicit_cache_dir_wins_over_env(tiny, tmp_path_factory) -> None:
    _, env_dir, _ = tiny
    other = tmp_path_factory.mktemp("other_cache")
    tasks.trained("test_cache_tiny", seed=0, cache_dir=other, track=False)
    assert _entries(env_dir) == [] and len(_entries(other)) == 1
    assert cache_module.cache_dir(None) == env_dir


def test_failed_write_leaves_no_partial_file(tiny, monkeypatch) -> None:
    _, directory, _ = tiny

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an entry")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.warns(tasks.CacheWarning, match="Could not write cache entry .*disk full"):
        run = tasks.trained("test_cache_tiny", seed=0, track=False)
    assert not run.from_cache
    assert _entries(directory) == []  # neither the entry nor its temporary file


def test_checksum_sees_names_shapes_and_values() -> None:
    base = {"a": np.zeros((2, 3), np.float32), "b": np.ones(3)}
    digest = cache_module.checksum(base)
    assert cache_module.checksum(dict(base)) == digest
    assert cache_module.checksum({**base, "a": np.zeros((3, 2), np.float32)}) != digest
    assert cache_module.checksum({**base, "b": np.ones(3) * 2}) != digest
    assert cache_module.checksum({"c": base["a"], "b": base["b"]}) != digest


def test_concurrent_misses_train_once_and_the_other_reads_the_entry(tiny, monkeypatch) -> None:
    """Two threads (standing for two xdist workers; flock locks are per open file, so threads
    contend like processes) ask for the same missing model: one trains, the other waits on the
    entry's lock and reads what the first wrote."""
    import threading
    import time

    _, directory, calls = tiny
    training = tasks.trainer.train  # the counting wrapper of the fixture

    def slow_train(*args, **kwargs):
        time.sleep(1.0)  # long enough for the other thread to miss and wait on the lock
        return training(*args, **kwargs)

    monkeypatch.setattr(tasks.trainer, "train", slow_train)
    results, errors = [], []

    def ask():
        try:
            results.append(tasks.trained("test_cache_tiny", seed=4, track=False))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert calls == [4]  # trained once
    assert sorted(r.from_cache for r in results) == [False, True]
    for a, b in zip(results[0].model.get_weights(), results[1].model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [e for e in _entries(directory) if not e.endswith(".npz")] == []  # lock file removed


def test_a_held_lock_times_out_with_a_message_naming_it(tiny, monkeypatch) -> None:
    _, directory, calls = tiny
    first = tasks.trained("test_cache_tiny", seed=0, track=False)
    path = cache_module.Path(first.cache_path)
    os.remove(path)
    monkeypatch.setenv(cache_module.LOCK_TIMEOUT_ENV, "0.3")
    with cache_module.entry_lock(path) as held:  # another "process" is training this model
        assert held
        with pytest.raises(tasks.CacheLockTimeout, match=r"Waited 0.3 s for the lock .*\.lock .*"
                           + cache_module.LOCK_TIMEOUT_ENV):
            tasks.trained("test_cache_tiny", seed=0, track=False)
    assert calls == [0]  # the waiting call never trained
    monkeypatch.setenv(cache_module.LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="IMPORTANCE_BENCH_CACHE_LOCK_TIMEOUT must be a number .* 'soon'"):
        cache_module.lock_timeout()


@pytest.mark.parametrize("umask,folder,expected", [(0o022, 0o755, 0o644), (0o077, 0o750, 0o640),
                                                   (0o077, 0o700, 0o600), (0o027, 0o755, 0o644)])
def test_entries_are_as_readable_as_the_folder(tiny, umask, folder, expected) -> None:
    """Not mkstemp's 0600: the umask's mode plus the folder's read bits for group and others."""
    _, directory, _ = tiny
    os.chmod(directory, folder)
    previous = os.umask(umask)
    try:
        run = tasks.trained("test_cache_tiny", seed=0, track=False)
    finally:
        os.umask(previous)
        os.chmod(directory, 0o700)
    assert oct(os.stat(run.cache_path).st_mode & 0o777) == oct(expected)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root to act as another user (seteuid)")
def test_another_users_private_entry_is_named_not_retrained(tiny, monkeypatch) -> None:
    """Issue 20: an entry another user wrote with mode 0600 in a shared folder. This process
    switches its effective user to ``nobody`` and finds root's private entry."""
    import shutil
    import tempfile

    _, _, calls = tiny
    shared = tempfile.mkdtemp(prefix="importance-shared-cache-", dir="/tmp")
    try:
        os.chmod(shared, 0o1777)  # a shared folder, like /tmp
        monkeypatch.setenv(cache_module.CACHE_ENV, shared)
        own = tasks.trained("test_cache_tiny", seed=0, track=False)  # written by root, readable
        os.chmod(own.cache_path, 0o600)  # as an older version (mkstemp) wrote it
        nobody = 65534
        os.seteuid(nobody)
        try:
            with pytest.raises(tasks.CacheEntryUnreadable, match=r"exists but this user may not "
                               r"read it \(owner root, mode -rw-------.*chmod a\+r .*cache=False"):
                tasks.trained("test_cache_tiny", seed=0, track=False)
            assert calls == [0]  # not retrained
            os.seteuid(0)
            os.chmod(own.cache_path, 0o644)
            os.seteuid(nobody)
            again = tasks.trained("test_cache_tiny", seed=0, track=False)  # readable: a hit
            assert again.from_cache and calls == [0]
        finally:
            os.seteuid(0)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
