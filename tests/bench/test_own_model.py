"""A researcher's own trained model on the leaderboard: ``--bench-model``/``--bench-data``, a task
plugin of the ``importance.tasks`` entry-point group, and the thresholding study on a live model.

Fast, in process:

* the study (scores, curves at every level and treatment, an interrupted sweep) leaves a live
  model's weights bitwise as they were; online measures are skipped as not applicable and
  recorded with the reason, once per task;
* ``--bench-model`` / ``--bench-data`` parsed by :class:`RunOptions`: the task comes first in the
  plan, runs every treatment, joins the saliency plan only with a convolution; bad files and
  models are usage errors naming the value.

Slow, in one subprocess (``pytest benchmarks ...`` restricted with ``-k``) that takes the model
twice, by ``--bench-model`` and as a task plugin installed by entry point (a throw-away
``dist-info`` on ``PYTHONPATH``) named in ``--bench-tasks``: the leaderboard has a section for
each ranking every applicable measure and a "Not applicable" section, and the model file is byte
for byte unchanged. (One process for both: each costs ~5 s of CPU to import TensorFlow.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import importance as imp
import tasks
from benchmarks.plugin.options import RunOptions
from benchmarks.saliency import study as saliency
from benchmarks.thresholding import study as thresholding
from tasks.registry import TASKS

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _planted(n: int = 240, seed: int = 0):
    """A 3-class Dense model whose weights are set by hand (class = argmax of the first 3 of 6
    inputs, the other 3 are noise it nearly ignores) and data it classifies, as train and test."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1).astype(np.int32)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="head"),
        ],
        name="planted_net",
    )
    kernel = np.zeros((6, 8), np.float32)
    kernel[:3, :3], kernel[:3, 3:6] = 6 * np.eye(3), -6 * np.eye(3)  # relu(+x), relu(-x)
    kernel[3:, 6:] = rng.normal(scale=0.1, size=(3, 2))
    head = np.zeros((8, 3), np.float32)
    head[:3], head[3:6] = np.eye(3), -np.eye(3)
    small = rng.normal(scale=0.02, size=(6 * 8 + 8 + 8 * 3 + 3,)).astype(
        np.float32
    )  # no exact zeros:
    kernel, head = kernel + small[:48].reshape(6, 8), head + small[56:80].reshape(8, 3)  # a noise
    model.get_layer("hidden").set_weights([kernel, small[48:56]])  # replacement of a constant layer
    model.get_layer("head").set_weights([head, small[80:]])  # changes nothing (std 0)
    half = n // 2
    return model, (x[:half], y[:half]), (x[half:], y[half:])


class _Writer:
    def __init__(self):
        self.records: list[dict] = []

    def write(self, records):
        self.records += list(records)


@pytest.fixture
def scoped_tasks():
    tasks.available_tasks()  # load the built-ins and plugins before the scope saves the registry
    with TASKS.scoped():
        yield


def test_the_study_leaves_a_live_model_bitwise_and_records_online_measures_as_not_applicable(
    scoped_tasks,
):
    model, train, test = _planted()
    before = [np.array(w.numpy(), copy=True) for w in model.weights]
    tasks.from_model(model, train=train, test=test, name="live")
    options = RunOptions("quick", seeds=1, tasks=(("live", None),), user_task="live")
    plan = thresholding.make_plan(options)
    assert plan.tasks == (("live", None),) and len(plan.treatments_for("live")) == 3
    writer = _Writer()
    study = thresholding.Study(dataclasses.replace(plan, thresholds=(0.0, 0.5, 1.0)), writer)
    subject = study.subject("live", None, 0)
    assert subject.model is model and subject.base_accuracy == 1.0
    for level in ("weight", "unit", "layer"):
        for scope, replace in plan.treatments_for("live"):
            study.curve("fisher", subject, level, scope, replace)

    def interrupt(threshold, thresholded):
        if threshold > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imp.threshold_sweep(
            model,
            study.scores("magnitude", subject),
            test,
            thresholds=[0.0, 0.5],
            seed=0,
            on_evaluate=interrupt,
        )
    for weight, saved in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), saved)

    with pytest.raises(
        pytest.skip.Exception, match=r"si on live: not applicable, needs the training run"
    ):
        study.scores("si", subject)
    study.subject("live", None, 1)  # a second seed writes no second set
    online = sorted(m for m in imp.available_measures() if imp.get_measure(m).online)
    left_out = [r for r in writer.records if r["kind"] == "not_applicable"]
    assert sorted(r["measure"] for r in left_out if r["axis"] == "removal") == online
    assert {r["axis"] for r in left_out if "measure" not in r} == {
        "consolidation",
        "cam_training",
        "explanation",
    }
    assert len(left_out) == len({(r["axis"], r.get("measure")) for r in left_out})


class _Config:
    def __init__(self, **options):
        self.options = {
            "--full": False,
            "--quick": False,
            "--bench-seeds": None,
            "--bench-tasks": None,
            "--bench-model": None,
            "--bench-data": None,
            **options,
        }

    def getoption(self, name):
        return self.options[name]


def _files(tmp_path, model, train, test):
    path, data = tmp_path / "my_net.keras", tmp_path / "data.npz"
    model.save(path)
    np.savez(data, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    return path, data


def test_bench_model_options_put_the_task_first_and_refuse_bad_input(scoped_tasks, tmp_path):
    model, train, test = _planted()
    path, data = _files(tmp_path, model, train, test)
    options = RunOptions.from_config(
        _Config(
            **{"--bench-model": str(path), "--bench-data": str(data), "--bench-tasks": "digits"}
        )
    )
    assert options.user_task == "my_net" and options.tasks == (("my_net", None), ("digits", None))
    again = RunOptions.from_config(
        _Config(**{"--bench-model": str(path), "--bench-data": str(data)})
    )
    assert again.tasks == (("my_net", None),)  # the same file parsed again in one process
    plan = thresholding.make_plan(options)
    assert plan.tasks[0] == ("my_net", None) and len(plan.treatments_for("my_net")) == 3
    assert saliency.make_plan(options).tasks == ()  # no convolution: not on the explanation axes

    regression = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    regression.save(tmp_path / "regression.keras")
    np.savez(
        tmp_path / "narrow.npz",
        x_train=train[0][:, :4],
        y_train=train[1],
        x_test=test[0],
        y_test=test[1],
    )
    np.savez(
        tmp_path / "labels.npz",
        x_train=train[0],
        y_train=train[1] + 3,
        x_test=test[0],
        y_test=test[1],
    )
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 not really")
    cases = [
        (
            {"--bench-model": str(path)},
            r"--bench-model needs --bench-data\. Received: --bench-model '.*my_net",
        ),
        (
            {"--bench-model": str(tmp_path / "nope.keras"), "--bench-data": str(data)},
            r"model_or_path '.*nope\.keras' does not exist",
        ),
        (
            {"--bench-model": str(tmp_path / "broken.keras"), "--bench-data": str(data)},
            r"'.*broken\.keras' does not load as a Keras model",
        ),
        (
            {"--bench-model": str(tmp_path / "regression.keras"), "--bench-data": str(data)},
            r"has 1 output unit; only classifiers",
        ),
        (
            {"--bench-model": str(path), "--bench-data": str(tmp_path / "narrow.npz")},
            r"train has inputs of shape \(120, 4\) but the model expects \(None, 6\)",
        ),
        (
            {"--bench-model": str(path), "--bench-data": str(tmp_path / "labels.npz")},
            r"train: labels must be class ids in \[0, 3\) for this model\. "
            r"Received [345] for example 0",
        ),
    ]
    cases.append(({"--quick": True, "--full": True}, r"--quick and --full exclude each other\."))
    for given, message in cases:
        with pytest.raises(pytest.UsageError, match=message):
            RunOptions.from_config(_Config(**given))


def _sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bench(
    tmp: pathlib.Path, out: str, *args: str, pythonpath: str = ""
) -> tuple[subprocess.CompletedProcess, str]:
    env = {
        **os.environ,
        "IMPORTANCE_BENCH_CACHE": str(tmp / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(
            p for p in (pythonpath, os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    # Every measure, its curves at weight level under the default treatment, one seed.
    select = "test_case and weight and not global-zero and not layer-noise"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "benchmarks",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hypothesispytest",  # the benchmarks use none: about 1 s less per process
        "-q",
        "--bench-seeds",
        "1",
        "--bench-report-dir",
        str(tmp / out),
        "-k",
        select,
        *args,
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, (tmp / out / "leaderboard.md").read_text()


def _ranked(leaderboard: str, title: str) -> list[str]:
    section = leaderboard.split(title, 1)[1].split("</details>", 1)[0].split("\n## ", 1)[0]
    return [
        row.split("|")[2].strip() for row in section.splitlines() if re.match(r"\| \d+ \|", row)
    ]


def _applicable() -> set[str]:
    return {m for m in imp.available_measures() if not imp.get_measure(m).online}


PLUGIN = """
import tasks

tasks.from_model({path!r}, data={data!r}, name="plugged")
"""


@pytest.fixture(scope="module")
def own_model_run(tmp_path_factory):
    """One benchmark run of the model file by ``--bench-model`` and, the same file, by a task
    plugin in ``--bench-tasks``; the file's hash before the run."""
    tmp = tmp_path_factory.mktemp("own_model")
    model, train, test = _planted()
    path, data = _files(tmp, model, train, test)
    before = _sha(path)
    site = tmp / "site"
    dist = site / "own_model_plugin-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: own-model-plugin\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        "[importance.tasks]\nown_model_plugin = own_model_plugin\n"
    )
    (site / "own_model_plugin.py").write_text(
        textwrap.dedent(PLUGIN.format(path=str(path), data=str(data)))
    )
    result, leaderboard = _bench(
        tmp,
        "out",
        "--bench-model",
        str(path),
        "--bench-data",
        str(data),
        "--bench-tasks",
        "plugged",
        pythonpath=str(site),
    )
    return result, leaderboard, path, before


@pytest.mark.slow
@pytest.mark.parametrize("task", ["my_net", "plugged"], ids=["by-bench-model", "by-task-plugin"])
def test_the_model_ranks_every_applicable_measure_and_its_file_is_unchanged(own_model_run, task):
    """``my_net`` came by ``--bench-model``, ``plugged`` by the entry-point task plugin."""
    result, leaderboard, path, before = own_model_run
    assert (
        set(_ranked(leaderboard, f"{task}.pretrained · weight · global scope, noise"))
        == _applicable()
    )
    assert (
        "## Not applicable" in leaderboard
        and f"| {task}.pretrained | removal | momentum" in leaderboard
    )
    assert re.search(r"(\d+) skipped", result.stdout)  # the online measures' cases
    assert _sha(path) == before


def test_the_explanation_axes_take_convolutional_tasks_and_the_full_plan_the_applications(
    scoped_tasks,
):
    conv = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(2, 1),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    x = np.random.default_rng(0).normal(size=(40, 4, 4, 1)).astype(np.float32)
    y = np.argmax(conv.predict(x, verbose=0), axis=1)  # the model is right by construction
    tasks.from_model(conv, train=(x, y), test=(x, y), name="my_cnn")
    named = (("my_cnn", None), ("digits", None), ("mnist5k_rgb32", "mobilenetv2"))
    plan = saliency.make_plan(RunOptions("quick", tasks=named, user_task="my_cnn"))
    assert plan.tasks == (
        ("my_cnn", None),
        ("mnist5k_rgb32", "mobilenetv2"),
    )  # digits: no convolution
    assert plan.seeds["my_cnn"] == (0,) and {"my_cnn", "mnist5k_rgb32"} <= set(plan.kept_tasks)
    full = RunOptions("full")
    assert ("mnist5k_rgb32", "mobilenetv2") in saliency.make_plan(full).tasks
    assert saliency.make_plan(full).seeds["mnist5k_rgb32"] == (0, 1, 2)
    assert {("mnist5k_rgb32", "mobilenetv2"), ("cifar10", "resnet50")} <= set(
        thresholding.make_plan(full).tasks
    )
    assert ("mnist5k_rgb32", "mobilenetv2") not in saliency.make_plan(RunOptions("quick")).tasks
