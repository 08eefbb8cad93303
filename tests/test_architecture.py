"""The package's layering rules, checked on the source (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import brain2image

PACKAGE = Path(brain2image.__file__).parent

#: Modules that may open HDF5 files: the format owners, the data sources' own readers (NSD's betas
#: and stimulus brick) and the simulated-NSD writer.
H5PY_ALLOWED = ("formats/", "sources/", "embedded/simulate/")

#: The NSD readers (brain2image.sources.nsd): only brain2image.sources imports them.
NSD_READERS = "brain2image.sources.nsd"
#: Modules outside brain2image.sources that may import an NSD reader, and what. The simulated-NSD
#: writer lays out the tree it writes with the reader's own paths (NSDLayout), so writer and reader
#: cannot disagree on a file name; it imports nothing that reads.
NSD_READER_EXCEPTIONS = {"embedded/simulate/nsd_writer.py": {"brain2image.sources.nsd.layout",
                                                            "brain2image.sources.nsd.layout.DEFAULT_BETA_VERSION",
                                                            "brain2image.sources.nsd.layout.NSDLayout"},
                         # a BIDS study that saw a simulated NSD study's images reads that tree as NSD
                         "embedded/simulate/bids_nsd_images.py": {
                             "brain2image.sources.nsd.design", "brain2image.sources.nsd.design.load_expdesign",
                             "brain2image.sources.nsd.layout", "brain2image.sources.nsd.layout.NSDLayout",
                             "brain2image.sources.nsd.layout.SIMULATION_TRUTH", "brain2image.sources.nsd.stimuli",
                             "brain2image.sources.nsd.stimuli.check_stimuli",
                             "brain2image.sources.nsd.stimuli.load_captions",
                             "brain2image.sources.nsd.stimuli.read_stimuli"}}


def _imports(path: Path) -> set[str]:
    """Absolute names of every module (and imported name) ``path`` imports, relative ones resolved."""
    is_init = path.name == "__init__.py"
    parts = ["brain2image", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = parts[:-1] if is_init else parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + is_init] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _core_modules() -> list[Path]:
    skip = ("embedded", "commands")
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in skip
            and p.name != "cli.py"]


def test_core_never_imports_the_embedded_world():
    assert len(_core_modules()) > 40, "the scan found too few core modules: it is broken"
    offenders = {str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p) if n.startswith("brain2image.embedded"))
                 for p in _core_modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_format_owners_open_hdf5():
    users = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "h5py" in _imports(p)]
    assert users, "the scan found no h5py user at all: it is broken"
    assert [u for u in users if not u.startswith(H5PY_ALLOWED)] == []


def test_only_sources_import_the_nsd_readers():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(PACKAGE))
        if where.startswith("sources/"):
            continue
        names = {n for n in _imports(path) if n == NSD_READERS or n.startswith(NSD_READERS + ".")}
        names -= NSD_READER_EXCEPTIONS.get(where, set())
        if names:
            offenders[where] = sorted(names)
    assert offenders == {}
    assert not (PACKAGE / "nsd" / "__init__.py").exists(), "the NSD readers live in brain2image/sources/nsd/"


def test_import_scan_finds_the_nsd_reader_imports():
    names = _imports(PACKAGE / "embedded" / "simulate" / "nsd_writer.py")
    assert NSD_READER_EXCEPTIONS["embedded/simulate/nsd_writer.py"] <= names
    assert "brain2image.sources.nsd.stimuli" in _imports(PACKAGE / "sources" / "nsd" / "source.py")


def test_import_scan_resolves_relative_imports():
    names = _imports(PACKAGE / "formats" / "predictions.py")
    assert "brain2image.formats.decoder_file" in names and "brain2image.errors" in names
    assert "brain2image.formats.prepared.PreparedData" in _imports(PACKAGE / "formats" / "__init__.py")


def test_builtin_reconstruction_methods_are_reached_only_through_the_registry():
    module = "brain2image.ldm.methods"
    importers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if any(n == module or n.startswith(module + ".") for n in _imports(p))]
    assert importers == []  # pyproject.toml's brain2image.methods entry points name them


def test_stage_commands_have_no_module_of_their_own():
    from brain2image.stages import stage_names

    commands = {p.stem for p in (PACKAGE / "commands").glob("*.py")}
    assert {"run", "demo", "merge"} <= commands, "the scan found no command module: it is broken"
    assert sorted(commands & set(stage_names())) == []  # generated from the stage registry by cli.py


def test_builtin_targets_are_reached_only_through_the_registry():
    targets = {"LatentTarget", "CaptionTarget"}
    users = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if any(n.rpartition(".")[2] in targets for n in _imports(p))]
    assert users == []  # pyproject.toml's brain2image.targets entry points name them
