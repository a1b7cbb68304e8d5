"""``asgid.__all__`` lists exactly the public names, and each of them exists."""

from __future__ import annotations

import types

import asgid


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(asgid).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(asgid.__all__) - {"__version__"} == public


def test_all_is_sorted_without_duplicates() -> None:
    assert asgid.__all__ == sorted(set(asgid.__all__))


def test_every_exported_name_exists_and_belongs_to_asgid() -> None:
    for name in asgid.__all__:
        value = getattr(asgid, name)
        if name != "__version__":
            assert value.__module__.startswith("asgid."), name


def test_version() -> None:
    assert isinstance(asgid.__version__, str)
    assert asgid.__version__.count(".") >= 1


def test_expected_entry_points() -> None:
    assert {"run", "serve", "Config", "ConfigError", "load_config"} <= set(asgid.__all__)
