"""The README's example must run as written (under 30 lines) and do what it says."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- readme-example -->"


def _example_source() -> str:
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, f"README.md lost its example marker {MARKER!r}"
    after = text.split(MARKER, 1)[1]
    match = re.search(r"```python\n(.*?)```", after, flags=re.S)
    assert match, "no ```python block after the README example marker"
    return match.group(1)


def test_readme_example_is_short() -> None:
    lines = [line for line in _example_source().splitlines() if line.strip()]
    assert len(lines) < 30, f"README example has {len(lines)} lines; keep it under 30"


def test_readme_example_runs() -> None:
    import importance as imp

    namespace: dict[str, object] = {}
    try:
        exec(compile(_example_source(), str(README), "exec"), namespace)  # noqa: S102
        curve = namespace["curve"]
        # The example's curve starts at the untouched model and ends with every weight replaced.
        assert list(curve.columns) == ["threshold", "loss", "accuracy", "fraction_replaced"]
        assert curve["fraction_replaced"].iloc[0] == 0.0
        assert curve["fraction_replaced"].iloc[-1] == 1.0
        assert curve["loss"].iloc[-1] > curve["loss"].iloc[0]
    finally:
        if "squared_weight" in imp.available_measures():
            imp.unregister_measure("squared_weight")
