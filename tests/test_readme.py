"""The README's and the docs pages' examples must run as written and do what they say.

The README's example (after ``<!-- readme-example -->``) is checked on its own, with assertions on
its result. Every other ```` ```python ```` block of README.md and docs/*.md runs too, page by page
in one namespace (a page's later blocks may use what its earlier ones defined), in a temporary
working directory. A block whose preceding line is ``<!-- not-tested: <reason> -->`` is skipped.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKER = "<!-- readme-example -->"
NOT_TESTED = "<!-- not-tested"
MAX_README_LINES = 300
# Pages whose examples train a real task's model for more than a few seconds.
SLOW_PAGES = {"cam_training.md"}


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


def _python_blocks(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """Every ```python block of a page: (first line number, source, the marker line before it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            assert end < len(lines), f"{path.name}:{i + 1}: unclosed ```python block"
            blocks.append((i + 2, "\n".join(lines[i + 1 : end]) + "\n", previous))
            i = end
        i += 1
    return blocks


def _runnable(path: pathlib.Path) -> list[tuple[int, str]]:
    return [(start, source) for start, source, previous in _python_blocks(path)
            if previous != MARKER and not previous.startswith(NOT_TESTED)]


PAGES = [README, *sorted(DOCS.glob("*.md"))]
PAGES_WITH_EXAMPLES = [
    pytest.param(page, id=page.name, marks=[pytest.mark.slow] if page.name in SLOW_PAGES else [])
    for page in PAGES
    if _runnable(page)
]


def test_not_tested_blocks_say_why() -> None:
    for page in PAGES:
        for start, _, previous in _python_blocks(page):
            if previous.startswith(NOT_TESTED):
                reason = previous[len(NOT_TESTED) :].strip().removeprefix(":").removesuffix("-->")
                assert reason.strip(), f"{page.name}:{start - 1}: a not-tested block needs a reason"


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_page_examples_run(page: pathlib.Path, tmp_path: pathlib.Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    import importance as imp
    import importance.continual as continual
    import importance.interpret as interpret
    import tasks

    monkeypatch.chdir(tmp_path)  # examples may write files (plots)
    measures, methods = set(imp.available_measures()), set(interpret.available_saliency())
    task_names = set(tasks.available_tasks())
    strategies = set(continual.available_strategies())
    namespace: dict[str, object] = {"__name__": f"docs_example_{page.stem}"}
    try:
        for start, source in _runnable(page):
            # Pad so that a traceback's line number is the line in the page.
            code = compile("\n" * (start - 1) + source, str(page), "exec")
            exec(code, namespace)  # noqa: S102
    finally:
        for name in set(imp.available_measures()) - measures:
            imp.unregister_measure(name)
        for name in set(interpret.available_saliency()) - methods:
            interpret.unregister_saliency(name)
        for name in set(tasks.available_tasks()) - task_names:
            tasks.unregister_task(name)
        for name in set(continual.available_strategies()) - strategies:
            continual.unregister_strategy(name)


def test_readme_is_short_and_links_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES, (
        f"README.md has {len(text.splitlines())} lines; keep it at most {MAX_README_LINES} and "
        "move the details to docs/"
    )
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README.md does not link docs/{page.name}"
