"""Helpers shared by the test files: the repository root, smoke-sized configs, the CLI run in
this process or as a subprocess (and a CyCADA command read back by it), small random images and image
folders, GTA5's label files and tiny GTA5 and Cityscapes sets, a benchmark script as a module, damaged checkpoint files, and a pickle that
would run code."""
import http.server
import importlib.util
import os
import re
import shlex
import signal
import struct
import sys
import threading
import zipfile
from contextlib import redirect_stderr
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import CyCADAConfig, CycleGANConfig, train_cyclegan
from cyclelib.cli import main
from cyclelib.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
DIGITS = "mnist5k:mnistm5k"


def smoke(out, data=DIGITS, **options) -> CycleGANConfig:
    """A smoke-scale CycleGAN config on the CPU in fp32, without sample grids in the loop."""
    base = dict(data=str(data), out=str(out), device="cpu", sample_every=1000, amp="none")
    return CycleGANConfig.for_scale("smoke", **{**base, **options})


def two_step_run(out) -> Path:
    """``out`` made a smoke run of two steps with a checkpoint after each (``checkpoints/step_0000001.pt``,
    ``step_0000002.pt``, ``checkpoint.pt`` the second)."""
    train_cyclegan(smoke(out, max_steps=2, checkpoint_every=1), progress=False)
    return out


def stop_at(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    """Training stops after ``step`` as after a Ctrl-C (``signum``; SIGTERM: as a cluster's preemption):
    the trainer's own handler runs."""
    after_step = Trainer._after_step

    def raise_signal_at_step(self, *args):
        if self.step == step:
            signal.raise_signal(signum)
        after_step(self, *args)

    monkeypatch.setattr(Trainer, "_after_step", raise_signal_at_step)


def cycada_smoke(out, **options) -> CyCADAConfig:
    """A smoke-scale CyCADA config, mnist5k -> mnistm5k, on the CPU in fp32."""
    base = dict(source="mnist5k", target="mnistm5k", out=str(out), device="cpu", amp="none")
    return CyCADAConfig.for_scale("smoke", **{**base, **options})


def cli(*argv: str) -> tuple[int, str]:
    """Run ``cyclelib ARGV`` in this process: (exit code, stderr) for a failure, (0, stderr) else."""
    err = StringIO()
    with redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as e:
            return e.code, err.getvalue()
    return 0, err.getvalue()


def parse_cycada_command(command: str) -> tuple[CyCADAConfig, str]:
    """The config and stages that ``cyclelib train cycada ...`` runs, read by the real command line."""
    seen = {}

    def record(config, stages, force):
        seen.update(config=config, stages=stages)
        return {}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cyclelib.cycada_run.run_cycada", record)  # the command imports it when it runs
        code, err = cli(*shlex.split(command)[1:])
    assert code == 0, err
    return seen["config"], seen["stages"]


def package_env() -> dict:
    """This process's environment with this checkout first on PYTHONPATH: a subprocess imports
    this checkout's cyclelib."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def cli_env() -> dict:
    """The environment of a ``python -m cyclelib`` subprocess: this checkout's package, no GPU,
    and this process's thread count (kernels may sum in another order with others, and
    kill-and-resume comparisons are bit for bit)."""
    return dict(package_env(), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=str(torch.get_num_threads()))


def cli_command(*argv: str) -> list[str]:
    """``python -m cyclelib ARGV`` for a subprocess (with :func:`cli_env`)."""
    return [sys.executable, "-m", "cyclelib", *argv]


def rgb(width, height, seed=0) -> Image.Image:
    """A random RGB image of ``width`` x ``height``."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def benchmark_script(name: str):
    """``benchmarks/<name>.py`` imported as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def palette_png(path: Path, ids: np.ndarray) -> Path:
    """GTA5's label files: palette images whose indices are label ids (``ids``, uint8 [H, W])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids, mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)
    return path


def rgb_png(path: Path, width: int, height: int, value: int = 0) -> None:
    """An RGB PNG of ``width`` x ``height`` pixels of one grey ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)


# Cityscapes label ids the tiny driving scenes are drawn with: unlabelled, road, sidewalk, car
DRIVING_LABEL_IDS = np.array([0, 7, 8, 26], dtype=np.uint8)
DRIVING_WIDTH, DRIVING_HEIGHT = 48, 32  # the scenes' files; read at a shorter side of 32 (smoke's image_size)


def driving_label_ids(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return DRIVING_LABEL_IDS[rng.integers(0, len(DRIVING_LABEL_IDS), (DRIVING_HEIGHT, DRIVING_WIDTH))]


def write_driving(root: Path, scenes: int = 6) -> dict:
    """GTA5 (``root/gta5``) and Cityscapes (``root/cityscapes``, train and val) of ``scenes`` random scenes each, in
    their official layouts; returns the ``source`` and ``target`` options that read them."""
    for i in range(scenes):
        rgb(DRIVING_WIDTH, DRIVING_HEIGHT, seed=i).save(_made(root / "gta5" / "images" / f"{i:05d}.png"))
        palette_png(root / "gta5" / "labels" / f"{i:05d}.png", driving_label_ids(i))
        for split in ("train", "val"):
            stem = f"city/city_{i:06d}_000019"
            rgb(DRIVING_WIDTH, DRIVING_HEIGHT, seed=100 + i).save(
                _made(root / "cityscapes" / "leftImg8bit" / split / f"{stem}_leftImg8bit.png"))
            Image.fromarray(driving_label_ids(100 + i), mode="L").save(
                _made(root / "cityscapes" / "gtFine" / split / f"{stem}_gtFine_labelIds.png"))
    return {"source": f"gta5:{root / 'gta5'}", "target": f"cityscapes:{root / 'cityscapes'}"}


def _made(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def driving_smoke(out, domains: dict, **options) -> CyCADAConfig:
    """A smoke-scale GTA5 -> Cityscapes config on the CPU in fp32: 16x16 crops of scenes 32 pixels high."""
    base = dict(task="segmentation", out=str(out), device="cpu", amp="none", crop_size=16, task_batch_size=2,
                feature_batch_size=2, task_epochs=2, feature_epochs=2, checkpoint_every=2)
    return CyCADAConfig.for_scale("smoke", **{**base, **domains, **options})


def image_folder(folder: Path, count: int, size=(40, 40), seed: int = 0) -> Path:
    """``folder`` (created) with ``count`` random RGB PNGs of ``size``, ``000.png``, ``001.png``...,
    drawn with seeds ``seed``, ``seed + 1``..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rgb(*size, seed=seed + i).save(folder / f"{i:03d}.png")
    return folder


def train_pair(root: Path, count: int = 3, size=(40, 40)) -> Path:
    """``root`` in the official layout, train split only: ``count`` random RGB PNGs per domain
    (``trainB``'s drawn with other seeds than ``trainA``'s)."""
    for side, seed in (("A", 0), ("B", 100)):
        image_folder(root / f"train{side}", count, size, seed)
    return root


def photos(folder: Path, sizes) -> Path:
    """``folder`` (created) with one random RGB PNG per size in ``sizes``: ``00.png``, ``01.png``..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        rgb(*size, seed=i).save(folder / f"{i:02d}.png")
    return folder


def corrupt(path: Path, how: str) -> None:
    """Truncate the checkpoint at ``path`` to half (``how="truncated"``), or flip one byte in the
    middle of its largest tensor (``"flipped"``)."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) // 2:]
    else:
        with zipfile.ZipFile(path) as archive:
            record = max(archive.infolist(), key=lambda info: info.file_size)
        # The record's bytes follow its 30-byte local header, file name and extra field.
        name_length, extra_length = struct.unpack_from("<2H", data, record.header_offset + 26)
        data[record.header_offset + 30 + name_length + extra_length + record.file_size // 2] ^= 0xFF
    path.unlink()  # a new file: checkpoint.pt may be a hard link of a step file
    path.write_bytes(bytes(data))


def equal_states(a: dict, b: dict) -> bool:
    """Whether two state_dicts hold the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Payload:
    """Pickles as a call to exec that creates ``marker``: unpickling it with the full unpickler runs the code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


class RangeServer:
    """An HTTP server on 127.0.0.1, serving in a thread inside ``with``: ``files`` (URL path -> bytes)
    with Range support; a path in ``cut`` is sent only half (with the full Content-Length) once, then
    the connection is closed. ``paths`` records each request's path and ``ranges`` its Range header (None
    without one); with
    ``range_support`` off, Range is ignored. ``base`` is its URL."""

    def __init__(self):
        self.files, self.cut, self.paths, self.ranges, self.range_support = {}, set(), [], [], True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.paths.append(self.path)
                server.ranges.append(self.headers.get("Range"))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                wanted = server.range_support and self.headers["Range"]
                start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1]) if wanted else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut:
                    server.cut.discard(self.path)
                    self.wfile.write(body[start:len(body) // 2])
                    self.close_connection = True
                else:
                    self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()  # quick shutdown
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
