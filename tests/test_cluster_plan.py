"""The cluster runner is a generic executor: stages split themselves; only errors that can pass are retried.

Everything here runs without Ray (the tasks run in this process); tests/test_ray.py runs them on a local Ray.
"""

import errno
import json
import re
from pathlib import Path

import pytest
from splittable_stage import SquaresStage

import brain2image.cluster as cluster_package
from brain2image.cluster.plan import plan_stage, plan_subject
from brain2image.cluster.tasks import TransientTaskError, finish_task, is_transient, retry_transient, run_task
from brain2image.config import RunConfig
from brain2image.errors import DataFormatError, InvalidArgumentError, MissingFileError, ResourceError
from brain2image.stages import Split, Stage, TaskSpec, register_stage, stage_names, unregister_stage

CLUSTER = Path(cluster_package.__file__).parent


@pytest.fixture()
def squares():
    register_stage(SquaresStage)
    try:
        yield SquaresStage()
    finally:
        unregister_stage(SquaresStage.name)


def test_the_cluster_package_names_no_stage(squares):
    names = stage_names()
    assert "fit" in names and "squares" in names
    for path in sorted(CLUSTER.glob("*.py")):
        text = path.read_text()
        for name in names:
            for spelled in {name, name.replace("_", "-")}:
                found = re.search(rf"(?<![\w-]){re.escape(spelled)}(?![\w-])", text)
                where = "" if found is None else text[max(0, found.start() - 40):found.end() + 40]
                assert found is None, f"{path.name} names the stage {spelled!r}: ...{where}..."


def test_a_registered_stage_splits_itself_and_its_tasks_join(squares, tmp_path):
    import torch

    config = RunConfig(nsd_root=str(tmp_path), out_dir=str(tmp_path / "run"))
    whole = tmp_path / "whole"
    squares.run(_ctx(RunConfig(nsd_root=str(tmp_path), out_dir=str(whole))))
    (plan,) = [p for p in plan_subject(config, [squares], n_shards=3) if p.stage.name == "squares"]
    assert [[task.label for task in step] for step in plan.steps] == [[f"subject 1 squares {i}/3" for i in (1, 2, 3)]]
    assert plan.needs_finish and all(task.joined for task in plan.tasks) and plan.num_gpus == 0
    (tmp_path / "run").mkdir()
    times = [run_task(task, torch.get_num_threads()) for task in plan.tasks]
    assert all(set(t) == {"squares"} for t in times) and not (tmp_path / "run" / "timings.json").exists()
    finish_task(plan.stage, plan.config, plan.specs, *times)
    assert (tmp_path / "run" / "squares.txt").read_bytes() == (whole / "squares.txt").read_bytes()
    assert set(json.loads((tmp_path / "run" / "timings.json").read_text())) == {"squares"}
    (tmp_path / "run" / "squares.shard-2-of-3.txt").unlink()
    with pytest.raises(DataFormatError, match=r"shard 2/3 missing: .*squares\.shard-2-of-3\.txt"):
        finish_task(plan.stage, plan.config, plan.specs)
    one = plan_stage(squares, config, Split(shards=1))
    assert len(one.tasks) == 1 and not one.needs_finish and one.specs == (TaskSpec(),)


def _ctx(config):
    from brain2image.stages import StageContext

    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    return StageContext(config, progress=False)


class _NoTasks(Stage):
    name = "no_tasks"

    def tasks(self, ctx, split):
        return [[]]


class _ShardedWithoutFinish(Stage):
    name = "sharded_without_finish"
    shardable = True


def test_a_shardable_stage_splits_by_shards_and_must_join_them():
    config = RunConfig(nsd_root="nsd", out_dir="out")
    assert _ShardedWithoutFinish().tasks(None, Split(shards=3)) == [[TaskSpec(shard=(i, 3)) for i in (1, 2, 3)]]
    assert len(plan_stage(_ShardedWithoutFinish(), config, Split()).tasks) == 1  # one task: nothing to join
    with pytest.raises(InvalidArgumentError, match="'sharded_without_finish' splits into 3 tasks but does not "
                                                   "join them; expected an override of Stage.finish"):
        plan_stage(_ShardedWithoutFinish(), config, Split(shards=3))


def test_a_stage_without_tasks_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"stage 'no_tasks': tasks\(\) returned \[\[\]\]; expected"):
        plan_stage(_NoTasks(), RunConfig(nsd_root="nsd", out_dir="out"), Split())
    with pytest.raises(InvalidArgumentError, match="split: shards is 0"):
        Split(shards=0)


@pytest.mark.parametrize(("error", "retried"), [
    (OSError(errno.ENOSPC, "No space left on device"), True),   # a full disk may be freed
    (OSError(errno.ESTALE, "Stale file handle"), True),        # NFS
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), True),
    (ConnectionResetError("peer reset"), True),
    (TimeoutError("timed out"), True),
    (RuntimeError("CUDA error: unspecified launch failure"), False),  # a bug until shown otherwise
    (RuntimeError("shape mismatch: (4, 3) vs (4, 2)"), False),
    (ValueError("a bug"), False),
    (OSError("unknown"), False),
    (FileNotFoundError(errno.ENOENT, "No such file"), False),
    (MissingFileError("prepared/subj01.h5 not found"), False),   # bad input: never retried
    (ResourceError("stage fit ran out of host memory"), False),
])
def test_only_errors_that_can_pass_are_retried(error, retried):
    assert is_transient(error) == retried
    raised = TransientTaskError if retried else type(error)
    with pytest.raises(raised) as caught, retry_transient("subject 1 squares 1/2"):
        raise error
    assert (caught.value is error) != retried
    if retried:
        assert str(caught.value).startswith(f"subject 1 squares 1/2: {type(error).__name__}: ")
