"""Root pytest configuration: seeds, TensorFlow determinism, a no-network guard.

Applies to both ``tests/`` and ``benchmarks/``. Option:

* ``--allow-network``: lift the guard that fails any test opening a network socket.

The benchmark options (``--quick``/``--full``, ``--bench-*``) are declared with the benchmark
plugin, in ``benchmarks/conftest.py``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import socket
import sys
import tempfile
import types
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

# TensorFlow's start-up lines that TF_CPP_MIN_LOG_LEVEL does not reach: the oneDNN notice is
# logged through absl before absl is initialised, whatever the level. Only TF_ENABLE_ONEDNN_OPTS=0
# turns it off, and that changes the numerics, so instead the import's stderr is filtered.
STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[IW]\d{4} [\d:.]+\s+\d+ (port|cpu_feature_guard)\.cc:\d+\]"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
)


@contextlib.contextmanager
def _startup_noise_filtered() -> Iterator[None]:
    """Drop TensorFlow's known start-up lines from stderr while the block runs; keep every other.

    The C++ library writes to file descriptor 2 while it loads, so the descriptor is pointed at a
    temporary file during the block and the lines that are not start-up noise are written back.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not STARTUP_NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Filters the start-up noise of TensorFlow's first import, whenever and wherever it happens.

    TensorFlow is not imported here: a process that runs no test (the xdist controller of
    ``./run test``) never pays for it (~5 s of CPU before the workers start). The finder removes
    itself at that first import and runs TensorFlow's own loader inside the filter.
    """

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 (the finder protocol)
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            with _startup_noise_filtered():
                load(module)

        spec.loader.exec_module = exec_module
        return spec


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlowImport())

SEED = 1234


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("importance-bench")
    group.addoption(
        "--allow-network",
        action="store_true",
        default=False,
        help="Allow tests to open network sockets (off: any socket connection fails the test).",
    )


def _is_xdist_controller(config: pytest.Config) -> bool:
    """The process that hands tests to xdist's workers and runs none itself (the condition xdist
    checks before it starts them)."""
    return (not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"
            and not config.option.collectonly)


def pytest_configure(config: pytest.Config) -> None:
    if _is_xdist_controller(config):
        return  # each worker imports TensorFlow and turns determinism on in its own process
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


@pytest.fixture(autouse=True)
def _seed_everything(request: pytest.FixtureRequest) -> None:
    """The same seeds before every test, whatever ran before it in the process.

    Python's, NumPy's and Keras's generators are set to ``SEED``. TensorFlow's global seed is the
    test's own (``seed_of`` its node id), set without emptying TensorFlow's kernel cache, which
    saves every test its kernels (:mod:`benchmarks.plugin.seeding` says why and how). A test run
    twice in one process (``--count``, reruns) continues its own stateful random streams the second
    time.
    """
    from benchmarks.plugin.seeding import seed_everything, seed_of

    seed_everything(SEED, seed_of(request.node.nodeid))


class NetworkAccessError(RuntimeError):
    """A test tried to open a network connection; tests run offline."""


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that connects a socket to a non-local address (unless --allow-network)."""
    if request.config.getoption("--allow-network") or request.node.get_closest_marker("network"):
        return
    original_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return original_connect(self, address)
        if self.family == getattr(socket, "AF_UNIX", None):
            return original_connect(self, address)
        raise NetworkAccessError(f"Test tried to open a network connection to {address!r}.")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
