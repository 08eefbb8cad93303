"""docs/cli.md's option tables are those of the live parsers (tools/cli_reference.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_docs_cli_options_section_matches_the_commands():
    tool = _tool()
    assert tool.main(["--check", str(ROOT / "docs" / "cli.md")]) == 0, "run python tools/cli_reference.py"


def test_reference_has_every_command_and_its_config_keys():
    text = _tool().reference()
    for command in ("simulate", "prepare", "features", "fit", "reconstruct", "evaluate", "encode", "report",
                    "brain-correlation", "transfer", "demo", "run", "merge", "train-bundled", "transfer-curve"):
        assert f"### `brain2image {command}`" in text
    assert "| `--cv-folds` | [decoder] `cv_folds` | `5` |" in text
    assert "| `--source` | [source] `kind` | `nsd` |" in text and "| `--roi` | [source] `roi` |" in text
    assert "| `--device` | top level `device` | `cpu` |" in text
    assert "| `--reference-subjects` | [transfer] `reference_subjects` |" in text
    assert "| `--verbose`" not in text  # global options are listed once, in the intro
