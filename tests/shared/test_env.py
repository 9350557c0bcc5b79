"""Typed environment readers: defaults when unset, errors that name the variable."""

from __future__ import annotations

import pytest
from collab_common.env import (
    ImproperlyConfigured,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_required,
    env_str,
)

NAME = "COLLAB_TEST_SETTING"


@pytest.fixture(autouse=True)
def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)


def test_improperly_configured_is_a_value_error() -> None:
    assert issubclass(ImproperlyConfigured, ValueError)


# --- env_str / env_required ------------------------------------------------------------


def test_env_str_returns_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "hello")

    assert env_str(NAME) == "hello"


def test_env_str_returns_the_default_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_str(NAME) is None
    assert env_str(NAME, "dflt") == "dflt"
    monkeypatch.setenv(NAME, "")
    assert env_str(NAME, "dflt") == "dflt"


def test_env_required_returns_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "secret")

    assert env_required(NAME, "needed") == "secret"


@pytest.mark.parametrize("value", [None, ""])
def test_env_required_names_the_variable_and_the_reason(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is not None:
        monkeypatch.setenv(NAME, value)

    with pytest.raises(ImproperlyConfigured) as caught:
        env_required(NAME, "tokens are signed with it")

    assert NAME in str(caught.value)
    assert "tokens are signed with it" in str(caught.value)


# --- env_bool --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "On", " true "])
def test_env_bool_reads_true_spellings(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, raw)

    assert env_bool(NAME, False) is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF", ""])
def test_env_bool_reads_false_spellings(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, raw)

    assert env_bool(NAME, True) is False


def test_env_bool_returns_the_default_when_unset() -> None:
    assert env_bool(NAME, True) is True
    assert env_bool(NAME, False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y"])
def test_env_bool_rejects_other_values_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAME, raw)

    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_bool(NAME, False)


# --- env_int ---------------------------------------------------------------------------


def test_env_int_reads_an_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "42")

    assert env_int(NAME, 7) == 42


@pytest.mark.parametrize("value", [None, ""])
def test_env_int_returns_the_default_when_unset_or_empty(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is not None:
        monkeypatch.setenv(NAME, value)

    assert env_int(NAME, 7, minimum=100) == 7


@pytest.mark.parametrize("raw", ["abc", "1.5", "10k"])
def test_env_int_rejects_non_integers_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAME, raw)

    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be an integer"):
        env_int(NAME, 7)


def test_env_int_rejects_values_below_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "0")

    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be at least 1"):
        env_int(NAME, 7, minimum=1)


def test_env_int_accepts_the_minimum_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "1")

    assert env_int(NAME, 7, minimum=1) == 1


# --- env_float -------------------------------------------------------------------------


def test_env_float_reads_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "2.5")

    assert env_float(NAME, 1.0) == 2.5


def test_env_float_returns_the_default_when_unset() -> None:
    assert env_float(NAME, 1.25, minimum=10.0) == 1.25


@pytest.mark.parametrize("raw", ["fast", "1,5", "2s"])
def test_env_float_rejects_non_numbers_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAME, raw)

    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be a number"):
        env_float(NAME, 1.0)


def test_env_float_rejects_values_below_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "0.01")

    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be at least 0.05"):
        env_float(NAME, 1.0, minimum=0.05)


# --- env_list --------------------------------------------------------------------------


def test_env_list_splits_on_commas_and_strips_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, " a , b,, ,c ,")

    assert env_list(NAME, ["x"]) == ["a", "b", "c"]


def test_env_list_returns_a_copy_of_the_default_when_unset() -> None:
    default = ["x", "y"]

    result = env_list(NAME, default)

    assert result == ["x", "y"]
    result.append("z")
    assert default == ["x", "y"]


def test_env_list_of_an_empty_value_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "")

    assert env_list(NAME, ["x"]) == []
