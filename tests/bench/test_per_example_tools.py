"""The per-example command-line tools (issue 21) on a tiny model, in process.

* ``benchmarks.per_example.compare_settings``: its JSON report (the first setting against itself
  is exactly 0, a second setting is reported next to it, CPU and memory ratios against the plain
  pass), the settings of :mod:`importance.per_example.moments` are applied while a setting's step
  is traced and restored afterwards, also when that step fails; unknown settings, models and
  measures are refused by name; ``_lowest_changed`` on a planted ranking.
* ``benchmarks.per_example.profile_families``: its JSON report (engine CPU, one cost per layer
  family, the path counts of the model); unknown models and measures are refused by name.
* ``benchmarks/per_example/table.py``: the markdown tables of a ``--benchmark-json`` file (each
  group that has rows, the figures as recorded), and a file without such rows refused by name.

The applications models are replaced by a Conv2D -> GlobalAveragePooling2D -> Dense model on 6x6x2
inputs, and the peak-memory probe by a stand-in (it would switch on TensorFlow's CPU allocator
statistics for the whole test process).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from benchmarks.per_example import compare_settings, profile_families, table
from importance.per_example import moments

INPUT = (6, 6, 2)
# 16 positions per example in the Conv2D, the fused loop off, and the patches at any width (a
# narrow conv would take the offsets): moments from pairs of positions, then formed per example
TWO_SETTINGS = json.dumps({
    "pairs": {"PAIR_POSITIONS": 16, "FUSED_POSITIONS": 0, "PATCH_MIN_CHANNELS": 0},
    "no pairs": {"PAIR_POSITIONS": 0, "FUSED_POSITIONS": 0, "PATCH_MIN_CHANNELS": 0},
})


def _tiny() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input(INPUT),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="head"),
        ]
    )


def _build(name: str, n: int, image: int = 0):
    assert name == "tiny"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, *INPUT)).astype(np.float32)
    return _tiny(), (x, rng.integers(0, 3, size=n).astype(np.int32))


@pytest.fixture
def tiny(monkeypatch):
    """Both tools see one model, "tiny"; the moments settings are put back after the test even
    if a tool leaves them changed (so a failure here cannot leak into other tests)."""
    for tool in (compare_settings, profile_families):
        monkeypatch.setattr(tool, "MODELS", {"tiny": (_tiny, INPUT, "float32")})
        monkeypatch.setattr(tool, "build", _build)
    defaults = {key: getattr(module, key) for key, module in compare_settings.SETTABLE.items()}
    for key, value in defaults.items():
        monkeypatch.setattr(compare_settings.SETTABLE[key], key, value)
    return defaults


@pytest.fixture
def fake_peaks(monkeypatch):
    """Peak memory: runs the probed call once; 100 bytes for the plain pass, 150 for each step."""
    readings = iter([100] + [150] * 10)

    def peak(fn, device):
        fn()
        return next(readings)

    monkeypatch.setattr(compare_settings, "peak_memory", peak)


def _json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _settings() -> dict:
    return {key: getattr(module, key) for key, module in compare_settings.SETTABLE.items()}


def test_compare_settings_reports_each_setting_and_restores(tiny, fake_peaks, capsys):
    compare_settings.main(["tiny", "fisher_empirical", TWO_SETTINGS, "8", "4", "1"])
    out = _json_line(capsys)
    assert (out["model"], out["examples"], out["batch"], out["rounds"]) == ("tiny", 8, 4, 1)
    first, second = out["settings"]["pairs"], out["settings"]["no pairs"]
    assert first["difference"] == 0.0
    assert first["largest_entry_difference"] == 0.0
    assert first["lowest_1%_changed"] == first["lowest_10%_changed"] == 0.0
    assert set(second) == set(first)
    assert 0.0 < second["difference"] < 1e-5  # another path, traced with its own setting
    for report in (first, second):
        assert report["cpu_vs_plain"] > 0
        assert report["memory_vs_plain"] == 1.5
    assert _settings() == tiny  # "no pairs" (PAIR_POSITIONS 0) was the last one applied


def test_compare_settings_applies_a_setting_and_restores_when_it_fails(
    tiny, fake_peaks, monkeypatch
):
    seen = []

    def failing(*args, **kwargs):
        seen.append(_settings())
        raise RuntimeError("step failed")

    monkeypatch.setattr(compare_settings.engine, "per_example_moment", failing)
    settings = json.dumps({"small": {"PAIR_POSITIONS": 0, "CHUNK_ELEMENTS": 1234}})
    with pytest.raises(RuntimeError, match="step failed"):
        compare_settings.main(["tiny", "fisher_empirical", settings, "8", "4", "1"])
    assert seen == [{**tiny, "PAIR_POSITIONS": 0, "CHUNK_ELEMENTS": 1234}]  # traced with it
    assert _settings() == tiny


@pytest.mark.parametrize(
    ("model", "measure", "settings", "named"),
    [
        ("tiny", "fisher_empirical", '{"a": {"PAIR_POSITIONS": 0, "BATCH": 2}}', "BATCH"),
        ("ResNet9000", "fisher_empirical", "{}", "ResNet9000"),
        ("tiny", "fisher_exact", "{}", "fisher_exact"),
    ],
    ids=["setting", "model", "measure"],
)
def test_compare_settings_refuses_unknown_names(tiny, model, measure, settings, named):
    with pytest.raises(ValueError, match=named):
        compare_settings.main([model, measure, settings])


def test_lowest_changed_counts_what_left_the_lowest():
    first = np.arange(100, dtype=np.float64)
    other = first.copy()
    other[[2, 5]], other[[90, 95]] = first[[90, 95]], first[[2, 5]]  # 2 of the lowest 10 leave
    assert compare_settings._lowest_changed(first, other, 0.1) == pytest.approx(0.2)
    assert compare_settings._lowest_changed(first, other, 0.01) == 0.0  # index 0 stays lowest
    assert compare_settings._lowest_changed(first, first.copy(), 0.1) == 0.0
    assert compare_settings._lowest_changed(first, -first, 0.1) == 1.0


def test_profile_families_reports_engine_and_family_costs(tiny, capsys):
    profile_families.main(["tiny", "fisher_empirical", "32", "16"])  # engine_cpu is rounded to ms
    out = _json_line(capsys)
    assert (out["model"], out["examples"], out["batch"]) == ("tiny", 32, 16)
    assert out["paths"] == {"conv": 1, "dense": 1}
    assert set(out["family_costs"]) == {"engine_cpu", "conv", "dense"}
    assert out["family_costs"]["engine_cpu"] > 0
    assert out["plain_cpu"] > 0 and out["ratio"] > 0


@pytest.mark.parametrize(
    ("model", "measure", "named"),
    [("ResNet9000", "mas", "ResNet9000"), ("tiny", "fisher_exact", "fisher_exact")],
    ids=["model", "measure"],
)
def test_profile_families_refuses_unknown_names(tiny, model, measure, named):
    with pytest.raises(ValueError, match=named):
        profile_families.main([model, measure])


def test_profile_families_conv_layers_groups_by_kernel_and_positions(tiny, capsys):
    profile_families.main(["tiny", "mas", "--conv-layers", "4"])
    out = _json_line(capsys)
    assert (out["model"], out["measure"], out["batch"]) == ("tiny", "mas", 4)
    (row,) = out["conv_layers"]  # the one Conv2D: 3x3 kernel, 4x4 outputs, 2 -> 4 channels
    assert (row["kernel"], row["positions"], row["layers"], row["weights"]) == ([3, 3], 16, 1, 72)
    assert row["moment_ms"] >= 0 and row["filter_grad_ms"] >= 0


def test_profile_families_depthwise_layers_times_each_form_and_names_the_path(tiny, capsys,
                                                                            monkeypatch):
    """A 5x5 depthwise kernel over 8x8 outputs (forward by the cost model), a 3x3 one with depth
    multiplier 2 over 8x8 (folded), a dilated valid 3x3 one over 4x4 (elementwise; its output
    shape is read with the dilation) and a separable 3x3 stride-2 one with multiplier 2 over 2x2
    (elementwise): one row per shape, each applicable form timed, the path the cost model takes.
    """
    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([
            keras.Input((8, 8, 2)),
            keras.layers.DepthwiseConv2D(5, padding="same"),
            keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
            keras.layers.DepthwiseConv2D(3, dilation_rate=2),
            keras.layers.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ])

    monkeypatch.setattr(profile_families, "MODELS", {"tiny": (model, (8, 8, 2), "float32")})
    monkeypatch.setattr(profile_families, "build", lambda name, n, image=0: (model(), None))
    profile_families.main(["tiny", "fisher_empirical", "--depthwise-layers", "3"])
    out = _json_line(capsys)
    assert out["batch"] == 3
    rows = {(tuple(r["kernel"]), tuple(r["strides"]), r["positions"]): r
            for r in out["depthwise_layers"]}
    assert {key: row["path"] for key, row in rows.items()} == {
        ((5, 5), (1, 1), 64): "forward",
        ((3, 3), (1, 1), 64): "folded",
        ((3, 3), (1, 1), 16): "elementwise",
        ((3, 3), (2, 2), 4): "elementwise",
    }
    for key, row in rows.items():
        assert row["layers"] == 1
        assert min(row["folded_ms"], row["elementwise_ms"], row["filter_grad_ms"]) >= 0
        # the forward form is timed only where it applies (depth multiplier 1)
        assert (row["forward_ms"] is not None) == (key[0] == (5, 5))


def test_profile_families_outer_sums_times_each_way_and_restores(tiny, capsys, monkeypatch):
    """Every way of outer_sum_moment on each shape (pairs for the square moment only), each
    way really taken (a planted spy on the fused loop counts its traces), settings put back."""
    monkeypatch.setattr(profile_families, "OUTER_SUM_SHAPES", [(4, 6, 5), (20, 3, 2)])
    moments.fused_works()  # its one-time probe (3 positions) before the spy, whatever ran first
    fused_calls = []
    real = moments.fused_outer_sum_moment
    monkeypatch.setattr(moments, "fused_outer_sum_moment",
                        lambda a, g, m: fused_calls.append(a.shape[1]) or real(a, g, m))
    profile_families.main(["--outer-sums", "3"])
    out = _json_line(capsys)
    assert out["batch"] == 3
    assert [(r["positions"], r["D"], r["F"]) for r in out["outer_sums"]] == [(4, 6, 5), (20, 3, 2)]
    for row in out["outer_sums"]:
        assert set(row) - {"positions", "D", "F", "plain_ms"} == {
            "abs_fused", "abs_fused_as_laid_out", "abs_per_example", "square_fused",
            "square_fused_as_laid_out", "square_pairs", "square_per_example"
        }
        assert all(row[key] > 0 for key in row)
    assert sorted(set(fused_calls)) == [4, 20]  # the fused way ran at 20 positions too
    assert _settings() == tiny


def test_profile_families_conv_ways_times_each_way_and_restores(tiny, capsys, monkeypatch):
    """Every way of a convolution's kernel moments on each shape, each really taken (planted
    spies on the patch and grouped functions count their traces), the cost model's choice
    beside them, the settings put back."""
    from importance.per_example.layers import conv

    if not conv.grouped_filter_grad_works():
        pytest.skip("this TensorFlow build has no grouped filter gradient")
    monkeypatch.setattr(profile_families, "CONV_WAY_SHAPES", [(3, 4, 5, 1), (5, 3, 2, 2)])
    taken = []
    for name in ("patch_kernel_moment", "grouped_kernel_moment"):
        real = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, _r=real, _n=name, **k: taken.append(_n)
                            or _r(*a, **k))
    before = (conv.PATCHES, conv.GROUPED)
    profile_families.main(["--conv-ways", "3"])
    out = _json_line(capsys)
    assert out["batch"] == 3
    assert [(r["outputs"], r["channels"], r["filters"], r["stride"]) for r in out["conv_ways"]] == [
        ("3x3", 4, 5, 1), ("5x5", 3, 2, 2)]
    for row in out["conv_ways"]:
        assert all(row[way] > 0 for way in ("patches", "offsets", "grouped"))
    assert [r["chosen"] for r in out["conv_ways"]] == [
        conv.kernel_way([3, 3], 9, 4, 5), conv.kernel_way([3, 3], 25, 3, 2)]
    # per shape, the patches way and the grouped way each traced once; the offsets neither
    assert taken == ["patch_kernel_moment", "grouped_kernel_moment"] * 2
    assert (conv.PATCHES, conv.GROUPED) == before
    assert _settings() == tiny


def _bench_json(path, *infos):
    path.write_text(json.dumps({"benchmarks": [{"extra_info": info} for info in infos]}))
    return str(path)


APPLICATION_ROW = dict(
    group="per-example-applications", model="ResNet50", measure="mas", ratio_cpu=1.3125,
    ratio_cpu_interval=[1.2751, 1.3649], goal="above", ratio_wall=1.37, first_call_ratio=3.554,
    rel_error_one_at_a_time=4.1e-08, memory_vs_plain=1.04, load=[0.53, 1.31],
)


def test_table_prints_each_groups_rows_as_recorded(tmp_path, capsys):
    recurrent = {**APPLICATION_ROW, "model": "gru", "ratio_cpu_interval": None, "goal": None,
                 "memory_vs_plain": None}
    per_example = dict(
        group="per-example", device="CPU", model="mlp", examples=2048, timed_examples=2048,
        measure="mas", method="factorized", seconds=0.25, ratio_vs_plain=0.92,
        ratio_vs_plain_interleaved=0.9, ratio_vs_plain_paired=0.914,
        ratio_vs_plain_paired_interval=[0.8957, 0.9313], ratio_per_class=None,
        speedup_vs_loop=95.0, rel_error_vs_loop=3e-8, peak_bytes=2**20, memory_vs_plain=1.5,
    )
    older = {**per_example, "method": "vmap", "ratio_vs_plain_paired": None}
    del older["ratio_vs_plain_paired_interval"]  # a row recorded before the paired ratio
    other = {"group": "per-example-layers", "model": "text"}
    path = _bench_json(tmp_path / "bench.json", APPLICATION_ROW, recurrent, per_example, older,
                       other)
    table.main([path])
    printed = capsys.readouterr().out
    assert ("| ResNet50 | mas | 1.31x [1.28, 1.36] | above | 1.37x | 3.55x | 4.1e-08 | 1.04x | "
            "0.5-1.3 |") in printed
    assert "| gru | mas | 1.31x | - | 1.37x | 3.55x | 4.1e-08 | - | 0.5-1.3 |" in printed
    assert ("| CPU | mlp (N=2048) | mas | factorized | 0.250 | 0.92 (0.90) | 0.91 [0.90, 0.93] | - "
            "| 95.0 | 3.0e-08 | 1.00 | 1.50 |") in printed
    assert "| CPU | mlp (N=2048) | mas | vmap | 0.250 | 0.92 (0.90) | - | - | 95.0 |" in printed
    assert "text" not in printed  # a group without a table here


def test_table_refuses_a_file_without_its_groups(tmp_path):
    path = _bench_json(tmp_path / "other.json", {"group": "per-example-layers"})
    with pytest.raises(SystemExit, match="other.json has no per-example"):
        table.main([path])
