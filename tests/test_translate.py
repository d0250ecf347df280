"""Translating folders with an official generator file, as users of the official code have them,
never into the input folder unless told to."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from cyclelib.cli import main
from cyclelib.images import read_image
from cyclelib import build_generator, load_official, save_official
from cyclelib.translate import load_generator, translate_folder
from helpers import cli, photos

FIXTURE = Path(__file__).parent / "data" / "official-cyclegan-nets.pt"


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    entry = torch.load(FIXTURE, weights_only=True)["resnet_9blocks"]
    path = tmp_path_factory.mktemp("official") / "latest_net_G_A.pth"
    # Old official files carry InstanceNorm running statistics; loading must drop them.
    state = dict(entry["state_dict"], **{"model.2.running_mean": torch.zeros(8)})
    torch.save(state, path)
    return path, entry


def write_images(folder: Path, n: int = 3, size=(24, 20), ext="jpg"):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (60 * i, 128, 255 - 60 * i)).save(folder / f"photo_{i}.{ext}")


def test_translate_folder_with_an_official_generator(official_file, tmp_path):
    path, entry = official_file
    write_images(tmp_path / "in", ext="png")  # lossless, so the output can be compared exactly
    generator = load_generator(path, width=8)  # the fixture's generators are narrow
    written = translate_folder(generator, tmp_path / "in", tmp_path / "out", batch_size=2)
    assert sorted(p.name for p in written) == ["photo_0.png", "photo_1.png", "photo_2.png"]
    # 24x20 is a multiple of 4 already: the size is kept
    assert Image.open(written[0]).size == (24, 20)
    # and the result is what the official network computes on that image (up to 8-bit rounding)
    reference = load_official(entry["state_dict"], **entry["config"]).eval()
    with torch.no_grad():
        expected = (reference(read_image(tmp_path / "in" / "photo_1.png")[None])[0] + 1) / 2
    got = read_image(tmp_path / "out" / "photo_1.png")
    assert ((got + 1) / 2 - expected).abs().max() <= 1 / 255 + 1e-6


def test_translation_is_fp32_unless_bf16_is_asked_for(official_file, tmp_path):
    """bf16 would move some saved pixels by more than one level (the README measures it on a
    trained generator), so translation stays fp32 by default, even where bf16 is native."""
    path, _ = official_file
    # Textured images: a flat colour gives a flat output that both precisions round to the same
    # 8-bit level on some kernels (ATEN_CPU_CAPABILITY=default), and the check below would miss bf16.
    (tmp_path / "in").mkdir()
    noise = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = (torch.rand(20, 24, 3, generator=noise) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / "in" / f"photo_{i}.png")
    generator = load_generator(path, width=8)
    levels = {}
    for amp in ("none", "bf16"):
        main(["translate", "--checkpoint", str(path), "--width", "8", "--input", str(tmp_path / "in"),
              "--output", str(tmp_path / amp), "--amp", amp])
        levels[amp] = torch.stack([read_image(p) for p in sorted((tmp_path / amp).glob("*.png"))])
    with torch.no_grad():
        expected = torch.stack([generator(read_image(p)[None])[0] for p in sorted((tmp_path / "in").glob("*.png"))])
    assert ((levels["none"] - expected).abs() * 127.5).max() <= 1 + 1e-4  # fp32: the network's own output
    assert not torch.equal(levels["bf16"], levels["none"])  # --amp bf16 does compute in bf16


def test_cli_translate_official_with_wrong_width_is_a_clear_error(official_file, tmp_path, capsys):
    path, _ = official_file
    write_images(tmp_path / "in", n=1)
    with pytest.raises(SystemExit):
        main(["translate", "--checkpoint", str(path), "--input", str(tmp_path / "in"),
              "--output", str(tmp_path / "out")])  # default width 64 does not fit a width-8 file
    err = capsys.readouterr().err
    assert "width" in err and "cyclelib: error" in err


def test_cli_translate_official(official_file, tmp_path):
    path, _ = official_file
    write_images(tmp_path / "in", n=2)
    main(["translate", "--checkpoint", str(path), "--width", "8", "--size", "32",
          "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    assert Image.open(tmp_path / "out" / "photo_0.jpg").size == (32, 32)


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_translate_refuses_to_write_into_its_input_folder(tmp_path, where):
    generator = tmp_path / "g.pth"
    save_official(build_generator("resnet_1blocks", width=4), generator)
    source = photos(tmp_path / "photos" / "set", [(32, 32)] * 2)
    output = {"same": source, "inside": source / "translated", "around": tmp_path / "photos"}[where]
    before = {p: p.read_bytes() for p in source.rglob("*.png")}
    argv = ["translate", "--checkpoint", str(generator), "--arch", "resnet_1blocks", "--width", "4",
            "--input", str(source), "--output", str(output)]
    code, err = cli(*argv)
    assert code == 2 and "the input folder" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in source.rglob("*.png")} == before
    assert cli(*argv, "--overwrite")[0] == 0
