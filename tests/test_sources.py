"""Data sources: the registry, the ``[source]`` table and its ``nsd_root`` shorthand, subject labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ldm_dummy import write_fake_stimuli
from study_fixtures import one_error_line

from brain2image.cli import main
from brain2image.config import RunConfig, SourceConfig, check_config, load_run_config, run_config_from_dict
from brain2image.errors import InvalidArgumentError
from brain2image.formats.run_layout import RunLayout
from brain2image.sources import (
    DataSource,
    StimulusSource,
    SubjectWords,
    get_source,
    numeric_label,
    register_source,
    source_kinds,
    source_of,
    stimuli_of,
    stimuli_of_record,
    unregister_source,
)
from brain2image.sources.nsd import NSDSource, NSDStimuli
from brain2image.sources.nsd.stimuli import study_provenance


class _LabelsOnly:
    """A source with BIDS-like labels (``sub-01``, ``sub-02``): enough to check a config."""

    kind = "labels"
    dataset = "labels"
    subject_words = SubjectWords(one="a subject sub-01 or sub-02", many="subjects sub-01, sub-02",
                                 example='["sub-01", "sub-02"]')

    def __init__(self, config: SourceConfig) -> None:
        self.root = config.root

    def subjects(self) -> list[str]:
        return ["sub-01", "sub-02"]

    def subject_label(self, value: object) -> str | None:
        return value if value in self.subjects() else None


@pytest.fixture
def labels_source():
    register_source("labels", _LabelsOnly)
    yield "labels"
    unregister_source("labels")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ the registry
def test_nsd_is_registered_by_its_entry_point():
    assert "nsd" in source_kinds()
    source = get_source(SourceConfig(kind="nsd", root="somewhere"))
    assert isinstance(source, NSDSource) and isinstance(source, DataSource)
    assert isinstance(source.stimuli(), StimulusSource)
    assert (source.kind, source.dataset, source.subjects()) == ("nsd", "nsd", [str(s) for s in range(1, 9)])


def test_an_unknown_kind_is_a_one_line_error_listing_the_registered_kinds(tmp_path, capsys, labels_source):
    with pytest.raises(InvalidArgumentError) as error:
        get_source(SourceConfig(kind="xnat"))
    assert ("[source] kind = 'xnat': no such data source; expected one of ['betas', 'bids', 'labels', 'nsd']"
            in str(error.value))
    path = _write(tmp_path / "run.toml", f'out_dir = "{tmp_path / "out"}"\n[source]\nkind = "xnat"\nroot = "x"\n')
    assert main(["run", str(path)]) == 2
    assert (f'{path}: [source] kind = "xnat": expected one of "betas", "bids", "labels", "nsd" (the registered data '
            "sources)" in one_error_line(capsys))
    assert not (tmp_path / "out").exists()


def test_a_kind_registers_once(labels_source):
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_source("labels", _LabelsOnly)


# ------------------------------------------------------------------ [source] and nsd_root
def test_the_nsd_root_shorthand_and_a_source_table_give_the_same_config(tmp_path):
    (tmp_path / "cfg").mkdir()
    short = load_run_config(_write(tmp_path / "cfg" / "a.toml", 'nsd_root = "nsd"\nout_dir = "out"\nsubject = 2\n'))
    table = load_run_config(_write(tmp_path / "cfg" / "b.toml",
                                   'out_dir = "out"\nsubject = 2\n[source]\nkind = "nsd"\nroot = "nsd"\n'))
    both = load_run_config(_write(tmp_path / "cfg" / "c.toml",
                                  'nsd_root = "nsd"\nout_dir = "out"\nsubject = 2\n[source]\nroot = "nsd"\n'))
    assert short == table == both
    assert short.source == SourceConfig(kind="nsd", root=str(tmp_path / "cfg" / "nsd"))
    assert short.nsd_root == short.source.root
    assert short.to_dict() == table.to_dict() and "source" not in short.to_dict()  # run_config.json as before
    assert run_config_from_dict(short.to_dict()) == short
    assert RunConfig(out_dir="o", nsd_root="n") == RunConfig(out_dir="o", source=SourceConfig(root="n"))


def test_nsd_root_and_another_source_are_one_line_errors(tmp_path):
    path = _write(tmp_path / "run.toml", 'nsd_root = "a"\nout_dir = "o"\n[source]\nroot = "b"\n')
    with pytest.raises(InvalidArgumentError, match=r'nsd_root = ".* and \[source\] kind = "nsd", root = ".*'
                                                   ": expected one of the two"):
        load_run_config(path)
    path = _write(tmp_path / "run.toml", 'out_dir = "o"\n[source]\nkind = "nsd"\n')
    with pytest.raises(InvalidArgumentError, match=r"run.toml: \[source\] root = null: expected a string$"):
        load_run_config(path)
    with pytest.raises(Exception, match="missing required key 'nsd_root'; expected a path \\(or a \\[source\\] table"):
        load_run_config(_write(tmp_path / "run.toml", 'out_dir = "o"\n'))


def test_a_saved_run_config_old_or_new_names_its_stimuli(tmp_path):
    old = stimuli_of_record({"model": "bundled", "nsd_root": str(tmp_path)})
    assert isinstance(old, NSDStimuli) and old.root == str(tmp_path)
    new = stimuli_of_record({"source": {"kind": "nsd", "root": str(tmp_path)}})
    assert isinstance(new, NSDStimuli) and new.root == str(tmp_path)
    assert stimuli_of_record({"model": "bundled"}) is None


# ------------------------------------------------------------------ subject labels
def test_subject_labels_are_strings_and_nsd_keeps_integers_in_its_files(tmp_path):
    source = NSDSource(SourceConfig(root=str(tmp_path)))
    assert [source.subject_label(v) for v in (3, "3", " 03", 0, 9, "one", True, 2.0)] == [
        "3", "3", "3", None, None, None, None, None]
    assert [numeric_label(label) for label in ("3", "03", "sub-01")] == [3, "03", "sub-01"]
    config = run_config_from_dict({"nsd_root": "n", "out_dir": "o", "subject": "3"})
    assert config.subject == 3 and config.to_dict()["subject"] == 3
    assert run_config_from_dict({"nsd_root": "n", "out_dir": "o", "subjects": ["2", 5]}).subjects == [2, 5]
    layout = RunLayout.of("run", config.subject, "bundled", source.dataset)
    assert (layout.prepared.name, layout.decoder("z", "early").name) == ("subj03.h5", "subj03_z_early.h5")
    assert layout.feature_store("z").name == "nsd_bundled_z.h5"


def test_another_source_validates_its_own_labels(tmp_path, labels_source):
    config = run_config_from_dict({"out_dir": "o", "source": {"kind": "labels"}, "subject": "sub-02"})
    assert config.subject == "sub-02" and config.nsd_root is None
    table = config.to_dict()["source"]
    assert (table["kind"], table["root"], table["glm"]) == ("labels", None, "lss")
    assert "nsd_root" not in config.to_dict()
    assert run_config_from_dict(config.to_dict()) == config
    check_config(config)
    layout = RunLayout.of("run", config.subject, "bundled", source_of(config).dataset)
    assert (layout.subject_tag, layout.decoder("c", "ventral").name) == ("sub-02", "sub-02_c_ventral.h5")
    assert layout.feature_store("c").name == "labels_bundled_c.h5"
    with pytest.raises(InvalidArgumentError, match='^w: subject = 1: expected a subject sub-01 or sub-02$'):
        run_config_from_dict({"out_dir": "o", "source": {"kind": "labels"}, "subject": 1}, where="w")
    with pytest.raises(InvalidArgumentError, match=r'subjects = \["sub-01", "sub-01"\]: expected distinct subjects'):
        run_config_from_dict({"out_dir": "o", "source": {"kind": "labels"}, "subjects": ["sub-01", "sub-01"]})
    several = run_config_from_dict({"out_dir": "o", "source": {"kind": "labels"}, "subjects": ["sub-01", "sub-02"]})
    assert several.subjects == ["sub-01", "sub-02"]


def test_a_stage_command_takes_a_numeric_subject_as_an_integer(tmp_path, capsys):
    assert main(["prepare", "--subject", "03", "--nsd-root", str(tmp_path), "--check"]) == 1
    assert "subj03" in capsys.readouterr().out


# ------------------------------------------------------------------ NSD's stimuli
def test_nsd_stimuli_read_through_the_source(tmp_path):
    images = write_fake_stimuli(tmp_path / "nsd", n_images=6)["images"]
    stimuli = stimuli_of(RunConfig(out_dir="o", nsd_root=str(tmp_path / "nsd")))
    assert isinstance(stimuli, NSDStimuli)
    assert np.array_equal(stimuli.ids(), np.arange(6))
    assert np.array_equal(stimuli.images([4, 1, 4]), images[[4, 1, 4]])
    assert [b.tolist() for b, _ in stimuli.batches([5, 0, 3, 3], 2)] == [[0, 3], [5]]
    assert stimuli.identity() == study_provenance(tmp_path / "nsd")
    assert stimuli.origin() == {"nsd_root": str((tmp_path / "nsd").resolve())}
    assert not stimuli.is_simulated() and stimuli.describe() == f"NSD data ({tmp_path / 'nsd'})"
    assert len(stimuli.captions([0, 2])) == 2
    stimuli.check([0, 5])
    with pytest.raises(Exception, match="out of range"):
        stimuli.check([6])
    assert json.dumps(stimuli.identity())  # attributes of the files it makes
