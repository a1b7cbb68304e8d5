"""The generated configuration reference and the schema it is generated from.

``docs/configuration.md`` must be exactly what ``python -m asgid.config._docs``
prints, so a setting added or changed without regenerating the file fails here.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

import pytest
from harness import ROOT

from asgid.cli import build_parser
from asgid.config import Config, iter_settings
from asgid.config import _kinds as kinds
from asgid.config._docs import render
from asgid.config._schema import SECTIONS

DOCS = ROOT / "docs"

# The Python type each kind produces.
KIND_TYPES: dict[kinds.Kind, Any] = {
    kinds.BOOL: bool,
    kinds.INT: int,
    kinds.FLOAT: float,
    kinds.STR: str,
    kinds.STR_LIST: tuple[str, ...],
    kinds.HEADERS: tuple[tuple[str, str], ...],
    kinds.WORKER_COUNT: int,
    kinds.SIZE: int,
    kinds.MEMORY: int | kinds.Share,
}


def test_configuration_md_is_up_to_date() -> None:
    generated = render()
    current = (DOCS / "configuration.md").read_text()
    assert current == generated, (
        "docs/configuration.md is stale: run `python -m asgid.config._docs > docs/configuration.md`"
    )


def test_configuration_md_lists_every_setting_and_flag() -> None:
    text = render()
    for section in SECTIONS:
        assert f"\n## [{section}]\n" in text
    for info in iter_settings():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{info.key}` |"))
        assert info.meta.help in text
        for flag in info.meta.flags:
            assert f"`{flag}`" in text, flag
        assert row  # every key has a row


@pytest.mark.parametrize("info", list(iter_settings()), ids=lambda info: info.path)
def test_kind_agrees_with_annotation(info: Any) -> None:
    hints = typing.get_type_hints(SECTIONS[info.section])
    assert info.meta.kind in KIND_TYPES, f"{info.path}: add {info.meta.kind.name} to KIND_TYPES"
    assert hints[info.key] == KIND_TYPES[info.meta.kind], info.path


@pytest.mark.parametrize("info", list(iter_settings()), ids=lambda info: info.path)
def test_default_is_a_valid_value(info: Any) -> None:
    meta = info.meta
    default = info.default
    expected_type = KIND_TYPES[meta.kind]
    origin = typing.get_origin(expected_type) or expected_type
    if origin is types.UnionType:  # int | Share
        origin = expected_type
    assert isinstance(default, origin), info.path
    if meta.choices:
        assert default in meta.choices, info.path
    if meta.minimum is not None:
        assert default >= meta.minimum, info.path
    assert meta.help.endswith("."), f"{info.path}: help text should be a sentence"
    # the default survives a round trip through its own kind (what a TOML file would hold)
    raw: Any = [list(v) for v in default] if meta.kind is kinds.HEADERS else default
    if meta.kind is kinds.STR_LIST:
        raw = list(default)
    assert meta.kind.from_toml(raw) == default or meta.kind is kinds.WORKER_COUNT


def test_every_section_is_a_frozen_dataclass_of_settings() -> None:
    assert list(SECTIONS) == [f.name for f in dataclasses.fields(Config)]
    for cls in SECTIONS.values():
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_flags_are_unique_and_parse() -> None:
    seen: dict[str, str] = {}
    for info in iter_settings():
        for flag in info.meta.flags:
            assert flag not in seen, f"{flag} used by {seen.get(flag)} and {info.path}"
            seen[flag] = info.path
            assert re.fullmatch(r"--[a-z0-9][a-z0-9-]*|-[a-zA-Z]", flag), flag
    build_parser()  # argparse rejects conflicting option strings


@pytest.mark.parametrize(
    "name",
    [
        "cli.md",
        "migration.md",
        "index.md",
        "configuration.md",
        "deployment.md",
        "metrics.md",
        "kubernetes.md",
        "http2.md",
        "security.md",
    ],
)
def test_docs_exist_and_local_links_resolve(name: str) -> None:
    path = DOCS / name
    text = path.read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (path.parent / target).exists(), f"{name} links to missing {target}"


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "pip install . && asgid -c examples/hello.toml" in head
    assert "pip install -e '.[test]' && scripts/check" in head


def test_cli_md_documents_every_exit_code() -> None:
    import asgid.cli

    text = (DOCS / "cli.md").read_text()
    for code in asgid.cli.ExitCode:
        assert re.search(rf"^\| `?{int(code)}`? \|", text, re.MULTILINE), f"exit code {code!r}"


def test_scripts_are_executable() -> None:
    for script in (ROOT / "scripts" / "check", ROOT / ".ci" / "run"):
        assert script.stat().st_mode & 0o111, script
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text()
