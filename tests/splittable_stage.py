"""A toy stage that splits itself into tasks (for docs/extending.md): the squares of 0..11 in ``squares.txt``.

Not registered on import: a test registers it (``register_stage(SquaresStage)``). A cluster worker
finds the class by importing this module (the tests folder is on the workers' ``PYTHONPATH``).
"""

from __future__ import annotations

import numpy as np

from brain2image.formats.partitions import SHARD, require_pieces, shard_ids, shard_path
from brain2image.stages import Stage
from brain2image.stages.tasks import shard_count, shard_tasks

NUMBERS = np.arange(12)


class SquaresStage(Stage):
    """The squares of 0..11, one line each; on a cluster one task per shard of the numbers, then a join."""

    name = "squares"
    help = "write the squares of 0..11 (a toy stage that splits)"
    shardable = True

    def outputs(self, ctx):
        return {"squares": ctx.layout.root / "squares.txt"}

    def run(self, ctx, shard=None):
        """The whole file, or with ``shard`` (i, n) the squares of part i of the numbers into its shard file."""
        out = self.outputs(ctx)["squares"]
        path = out if shard is None else shard_path(out, shard)
        numbers = NUMBERS if shard is None else shard_ids(NUMBERS, shard)
        path.write_text("".join(f"{n * n}\n" for n in numbers))
        return path

    def tasks(self, ctx, split):
        """One task per shard (``--shards N``): ``[[TaskSpec(shard=(1, n)), ..., TaskSpec(shard=(n, n))]]``."""
        return shard_tasks(split.shards)

    def finish(self, ctx, tasks):
        """Join the shard files, in order, into ``squares.txt`` (a missing shard is named)."""
        out = self.outputs(ctx)["squares"]
        shards = require_pieces(out, SHARD, shard_count(tasks))
        out.write_text("".join(path.read_text() for path in shards))
