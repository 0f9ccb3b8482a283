"""How often one training step makes the host wait for the GPU (tests/virtual_cuda.py counts).

On CUDA every read of a GPU tensor on the host (``.item()``, ``bool()``, ``float()``,
``.tolist()``), every data-dependent shape (``nonzero``, a boolean mask) and every blocking copy
up from pageable memory waits for the queued kernels, and keeps the CPU from queueing the next
ones. The trainer and the guidance read the GPU once per step (its numbers and whether its
gradients are finite, in one copy); what is left is the sampler's data-dependent shapes and the
hash grid's and field's small constant tensors (see MOST_SYNCS_PER_STEP).
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
from tiny_models import builtin_on_virtual_cuda
from virtual_cuda import virtual_cuda

from dreamtext import trainer
from dreamtext.config import resolve_config

# One step of the tiny run, measured: 1 read in trainer.py (read_step_values) and 4 in the dense
# sampler (samplers.py: nonzero and three boolean masks). Before: 27 (fp32) and 31 (fp16), 18 and
# 22 of them in trainer.py and guidance.py, and 5 host lists copied up: the torch hash grid's
# corner offsets (encoding.py, one a level) and the background colour (field.py).
MOST_SYNCS_PER_STEP = 5
OURS = ("trainer.py", "guidance.py")


def count_one_step(tmp_path: Path, fp16: bool) -> tuple[Counter, Counter]:
    """Syncs of the 4th step of a tiny builtin-prior run on virtual CUDA: by kind, and by the
    dreamtext file that made them."""
    by_file: Counter = Counter()
    with virtual_cuda() as mode:
        # the occupancy grid's refresh reads the GPU on its own steps; not this one's
        cfg = resolve_config(
            builtin_on_virtual_cuda(
                tmp_path / "run", guidance={"fp16": fp16}, render={"grid_update_every": 1000}
            )
        )
        run = trainer.build_run(cfg)
        for _ in range(3):
            trainer.train_step(run)
        counted = mode._count_sync

        def count_where(*args):
            before = sum(mode.syncs.values())
            counted(*args)
            if sum(mode.syncs.values()) > before:
                ours = [f for f in traceback.extract_stack() if "/dreamtext/" in f.filename]
                by_file[Path(ours[-1].filename).name if ours else "?"] += 1

        mode._count_sync = count_where
        mode.syncs.clear()
        record = trainer.train_step(run)
    assert record["step"] == 4 and record["loss"] == pytest.approx(record["loss"])
    return mode.syncs, by_file


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_a_training_step_reads_the_gpu_once_in_the_trainer_and_guidance(tmp_path, fp16):
    syncs, by_file = count_one_step(tmp_path, fp16)
    assert sum(by_file[name] for name in OURS) == 1, by_file
    assert syncs["tolist"] == 1 and syncs["item"] == 0 and syncs["__bool__"] == 0, syncs
    assert syncs["__float__"] == 0, syncs
    assert sum(syncs.values()) <= MOST_SYNCS_PER_STEP, (syncs, by_file)


def test_a_step_logs_what_it_logged_before(tmp_path):
    """The numbers read in one copy are the ones ``.item()`` gave: float32 values, exactly."""
    with virtual_cuda():
        cfg = resolve_config(builtin_on_virtual_cuda(tmp_path / "run"))
        record = trainer.train_step(trainer.build_run(cfg))
    for key in ("loss", "loss_sds", "loss_entropy", "loss_opacity", "loss_orientation"):
        value = record[key]
        assert isinstance(value, float) and torch.tensor(value).item() == value
        assert float(torch.tensor(value, dtype=torch.float32)) == value  # a float32 exactly
    assert record["skipped"] == 0.0 and "update_skipped" not in record
