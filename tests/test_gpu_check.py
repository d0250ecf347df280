"""`make gpu-check` (benchmarks/gpu_check.py): a failing or overrunning step fails the whole
check; without CUDA the CPU dry run of every step passes and writes its summary; and a
one-process torchrun joins a process group (gloo here, NCCL on a GPU), which is how the
check reaches NCCL."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cyclelib import distributed
from helpers import ROOT, package_env

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_failing_overrunning_or_wrong_step_fails_the_check(tmp_path, capsys):
    gc = load_gpu_check()
    steps = [
        gc.Step("fine", "exits 0", 30, lambda ctx: python("print('fine')"), summary=lambda numbers: "all good"),
        gc.Step("broken", "exits 3", 30, lambda ctx: python("import sys; print('boom'); sys.exit(3)")),
        gc.Step("hangs", "overruns its box", 1, lambda ctx: python("import time; time.sleep(60)")),
        gc.Step("wrong", "exits 0 with bad results", 30, lambda ctx: python("pass"),
                read=lambda ctx, log: ({"x": 1}, ["x should be 2"])),
    ]
    out = tmp_path / "summary.json"
    assert gc.main(["--device", "cpu", "--json", str(out)], steps=steps) == 1
    summary = json.loads(out.read_text())
    assert summary["passed"] is False and summary["dry_run"] is True
    results = {s["name"]: s for s in summary["steps"]}
    assert {name: s["status"] for name, s in results.items()} == {
        "fine": "passed", "broken": "failed", "hangs": "timed out", "wrong": "failed"}
    assert results["fine"]["summary"] == "all good" and results["fine"]["problems"] == []
    assert results["broken"]["problems"] == ["exit code 3"] and "boom" in results["broken"]["log_tail"]
    assert results["hangs"]["seconds"] < 20 and results["hangs"]["problems"][0] == "timed out after 1 s"
    assert results["wrong"]["numbers"] == {"x": 1} and results["wrong"]["problems"] == ["x should be 2"]
    assert Path(summary["work"], "broken.log").is_file()  # a failed run keeps its logs
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "! exit code 3" in printed

    # The budget bounds the whole run: a step with no time left fails without running.
    assert gc.main(["--device", "cpu", "--json", str(out), "--budget", "2"], steps=steps[2:3] + steps[:1]) == 1
    results = {s["name"]: s for s in json.loads(out.read_text())["steps"]}
    assert results["hangs"]["status"] == "timed out" and results["fine"]["status"] == "not run"

    assert gc.main(["--device", "cpu", "--json", str(out), "--only", "fine"], steps=steps) == 0
    summary = json.loads(out.read_text())
    assert summary["passed"] is True and [s["name"] for s in summary["steps"]] == ["fine"]
    assert summary["work"] is None  # a passed run's temporary outputs are removed


def test_a_plain_process_with_world_size_1_joins_no_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert distributed.setup(torch.device("cpu")) == (0, 1, torch.device("cpu"))
    assert not torch.distributed.is_initialized()


PROBE = """
import json, torch, torch.distributed as dist
from cyclelib import distributed
rank, world, device = distributed.setup(torch.device("cpu"))
x = torch.tensor([1.0, 2.0])
dist.all_reduce(x)
print("PROBE " + json.dumps({"backend": dist.get_backend(), "rank": rank, "world": world, "sum": x.tolist()}))
"""


@pytest.mark.slow  # a torchrun launch
def test_a_one_process_torchrun_joins_a_process_group(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "--no-python", *python(PROBE)]
    done = subprocess.run(command, cwd=tmp_path, env=package_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    assert json.loads(line[len("PROBE "):]) == {"backend": "gloo", "rank": 0, "world": 1, "sum": [1.0, 2.0]}


@pytest.mark.slow  # the six steps at smoke size: about a minute on 2 cores
def test_the_cpu_dry_run_passes_every_step_and_writes_the_summary(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--json", str(out)], cwd=tmp_path,
                          env=package_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "CPU dry run of the same steps" in done.stdout and "all steps passed" in done.stdout
    if not torch.cuda.is_available():
        assert done.stdout.startswith("No CUDA device")
    summary = json.loads(out.read_text())
    assert summary["passed"] is True and summary["dry_run"] is True and summary["device"] == "cpu"
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["device-tests", "bench", "cycada", "segmentation", "torchrun", "fid"]
    for step in steps.values():
        assert step["status"] == "passed" and step["problems"] == [] and 0 < step["seconds"] <= step["box_s"]
    tests = steps["device-tests"]["numbers"]
    assert tests["counts"]["passed"] >= 7 and tests["counts"]["failure"] == tests["counts"]["error"] == 0
    assert {row["path"] for row in steps["bench"]["numbers"]["rows"]} == {"fast", "reference"}
    assert 0 <= steps["cycada"]["numbers"]["pixel_feature"] <= 1
    assert 0 <= steps["segmentation"]["numbers"]["pixel_feature"] <= 1
    assert steps["torchrun"]["numbers"] | {"last_losses": None} == {"expected_backend": "gloo", "steps": 4,
                                                                   "last_losses": None}
    fid = steps["fid"]["numbers"]  # the real Inception-v3 where its weights can be had, else a reason
    assert ("Inception-v3 weights" in fid["skipped"]) if "skipped" in fid else fid["fid"] >= 0
    assert summary["seconds"] < summary["budget_s"]
