"""importance.checks: the argument checks of the library and the tasks name the argument and value."""

from __future__ import annotations

import numpy as np
import pytest

from importance.checks import (
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    check_seed,
    is_integer,
    is_number,
)


@pytest.mark.parametrize("value", [0, 7, np.int64(3), np.uint8(2)])
def test_integers_pass_and_come_back_as_int(value):
    assert is_integer(value)
    assert check_int("n", value) == int(value) and type(check_int("n", value)) is int
    assert check_seed(value) == int(value)


@pytest.mark.parametrize("value", [True, 1.0, "1", None, np.float32(1)])
def test_non_integers_are_refused_by_name(value):
    assert not is_integer(value)
    with pytest.raises(ValueError, match=r"^n must be an integer\. Received: "):
        check_int("n", value)


def test_bounds_are_in_the_message():
    with pytest.raises(ValueError, match=r"^epochs must be an integer >= 0\. Received: -1$"):
        check_int("epochs", -1, minimum=0)
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer\. Received: -1$"):
        check_seed(-1)
    with pytest.raises(ValueError, match=r"^k must be a positive integer or None\. Received: 0$"):
        check_positive_int("k", 0, allow_none=True)
    assert check_positive_int("k", None, allow_none=True) is None


def test_choices_are_listed_and_unhashable_values_refused():
    assert check_choice("scope", "layer", ("global", "layer")) == "layer"
    with pytest.raises(ValueError, match=r"^scope must be one of \('global', 'layer'\)\. Received: 'glob'$"):
        check_choice("scope", "glob", ("global", "layer"))
    with pytest.raises(ValueError, match=r"Received: \['global'\]"):
        check_choice("scope", ["global"], {"global": 1, "layer": 2})


@pytest.mark.parametrize("value", [0, 2.5, np.float32(0.5), np.int64(3)])
def test_numbers_pass_and_come_back_as_float(value):
    assert is_number(value)
    assert check_number("lam", value, minimum=0) == float(value)


@pytest.mark.parametrize("value", [True, "1", None, float("nan"), float("inf"), -1, 0])
def test_non_numbers_and_out_of_bound_numbers_are_refused_by_name(value):
    with pytest.raises(ValueError, match=r"^width must be a finite number > 0\. Received: "):
        check_number("width", value, minimum=0, strict=True)

