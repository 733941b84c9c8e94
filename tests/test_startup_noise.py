"""TensorFlow's start-up lines are filtered out of the test and benchmark runs, and nothing else.

The root ``conftest.py`` installs an import hook: TensorFlow's first import, wherever it happens,
runs with its stderr (file descriptor 2) captured, and every line that is not known start-up noise
is written back. Checked here in a fresh process, with a stand-in ``tensorflow`` that writes noise
and a real error line at the C level. With the real TensorFlow, in real pytest processes (a serial
run, and xdist's controller and workers), ``tests/bench/test_bench_plugin.py`` checks the output
of the benchmark runs it starts anyway: a process of its own for this took ~6 s of CPU.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What a test process does: load the root conftest, then import TensorFlow (a test module's import).
LOAD_CONFTEST = f"import runpy; runpy.run_path({str(ROOT / 'conftest.py')!r}); import tensorflow"

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1795318135.090320    8662 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.\n",
    "I0000 00:00:1795318135.499319    8662 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
    "the appropriate compiler flags.\n",
]
KEPT = "E0000 00:00:1795318135.5    8662 cuda_dnn.cc:8579] a real error stays visible\n"


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", LOAD_CONFTEST], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_noise_is_dropped_and_other_lines_are_kept(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent(f"""
        import os
        os.write(2, {"".join(NOISE[:2] + [KEPT] + NOISE[2:]).encode()!r})
        class _Config:
            class experimental:
                enable_op_determinism = staticmethod(lambda: None)
        config = _Config()
    """))
    result = _run({"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("a real error stays visible") == 1, result.stderr
    for marker in ("absl::InitializeLog", "port.cc", "cpu_feature_guard", "To enable the following"):
        assert marker not in result.stderr, result.stderr
