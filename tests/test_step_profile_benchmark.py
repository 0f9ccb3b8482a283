"""benchmarks/step_profile.py: a step's phases and its costliest operators, on the CPU."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("step_profile", "step_profile_benchmark")


def test_a_profiled_step_reports_its_phases_and_costliest_ops(bench, tmp_path, capsys):
    trace = tmp_path / "step.json"
    argv = ["--device", "cpu", "--model", "none", "--size", "8", "--shading", "lambertian"]
    assert (
        bench.main([*argv, "--steps", "2", "--warmup", "0", "--rows", "4", "--trace", str(trace)])
        == 0
    )
    out = capsys.readouterr().out
    assert "## Step profile — CPU — 8 px lambertian, model none, fp32, compile off" in out
    phases = out.split("| render ms | guidance ms | backward+Adam ms | step ms | kernels a step |")
    values = phases[1].splitlines()[2].strip("| ").split(" | ")
    render, guidance, backward, step = map(float, values[:4])
    # No model: the guidance phase is mean(rgb), a fraction of a millisecond on a loaded machine
    # (CI measured 0.1 ms under the profiler), far under the render it follows.
    assert render > 0 and backward > 0 and 0 <= guidance < render
    # Each of the four printed values is rounded to 0.1 ms: at most 0.05 off.
    assert step == pytest.approx(render + guidance + backward, abs=0.2 + 1e-9)
    assert values[4] == "-"  # kernels are counted on CUDA only
    ops = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(ops) == 4
    costs = [float(line.rsplit("|", 2)[1]) for line in ops]
    assert costs == sorted(costs, reverse=True) and costs[-1] > 0
    assert any("aten::" in line for line in ops)
    assert json.loads(trace.read_text())["traceEvents"]


def test_steps_must_be_profiled(bench, capsys):
    with pytest.raises(SystemExit) as done:
        bench.main(["--device", "cpu", "--model", "none", "--steps", "0"])
    assert done.value.code == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
@pytest.mark.parametrize("script", ["step_profile", "sds_step"])
def test_a_cuda_device_without_a_gpu_is_a_usage_error(bench, script, capsys):
    """Both scripts read --device through sds_step.device_from_flag: auto is the CPU here."""
    module = bench if script == "step_profile" else sys.modules[bench.device_from_flag.__module__]
    with pytest.raises(SystemExit) as done:
        module.main(["--device", "cuda:0", "--model", "none"])
    assert done.value.code == 2
    assert "--device cuda:0: no CUDA device here" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    assert bench.device_from_flag(parser, "auto") == torch.device("cpu")


def test_kernels_a_step_count_the_device_events(bench):
    """On CUDA the profiler's device events (kernels, copies) are counted, per profiled step."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    events = [
        SimpleNamespace(device_type=DeviceType.CUDA, count=30),
        SimpleNamespace(device_type=DeviceType.CPU, count=500),
        SimpleNamespace(device_type=DeviceType.CUDA, count=6),
    ]
    profile = SimpleNamespace(key_averages=lambda: events)
    assert bench.kernels_a_step(profile, 3) == 12.0


def test_the_guidance_settings_reach_the_config(bench):
    args = argparse.Namespace(
        size=64, precision="fp16", compile=True, guidance={"compile_vae": True}
    )
    cfg = bench.step_config(args, "some/model", torch.device("cpu"))
    assert (cfg.guidance.compile, cfg.guidance.compile_vae, cfg.guidance.fp16) == (True, True, True)
    assert cfg.render.compile_field is True
