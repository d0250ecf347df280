"""translate streams (reads, translates and writes a batch at a time), gives each image back at its
own size, loads official dropout generators and takes a run folder (and one of its steps)."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cyclelib import build_generator, files, load_checkpoint, save_official
from cyclelib import translate as translate_module
from cyclelib.images import image_size, read_image, to_tensor
from cyclelib.runs import LATEST, step_checkpoints
from cyclelib.translate import load_generator, translate_folder, translate_image
from helpers import cli, equal_states, photos, rgb


def official(tmp_path: Path, arch: str = "resnet_1blocks", **options) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = build_generator(arch, width=4, **options).eval()
    return save_official(net, tmp_path / f"{arch}.pth"), net


@pytest.fixture
def events(monkeypatch):
    """Every image read and every file written, in order: ("read", name) and ("write", name)."""
    log = []
    read, write = translate_module.read_image, files.write_bytes

    def reading(path, *args):
        log.append(("read", Path(path).name))
        return read(path, *args)

    def writing(path, data):
        log.append(("write", Path(path).name))
        return write(path, data)

    monkeypatch.setattr(translate_module, "read_image", reading)
    monkeypatch.setattr(files, "write_bytes", writing)
    return log


def test_translate_writes_results_before_it_reads_the_last_image(tmp_path, events):
    """Memory stays flat with the folder's size because images stream: the first result is written
    before the last image is read, and each image is decoded once."""
    path, net = official(tmp_path)
    source = photos(tmp_path / "in", [(32, 32)] * 6)
    translate_folder(net, source, tmp_path / "out", batch_size=2)
    reads = [i for i, (what, _) in enumerate(events) if what == "read"]
    writes = [i for i, (what, _) in enumerate(events) if what == "write"]
    assert len(reads) == len(writes) == 6
    assert writes[0] < reads[-1], events
    assert [name for what, name in events] == ["00.png", "01.png", "00.png", "01.png", "02.png", "03.png",
                                               "02.png", "03.png", "04.png", "05.png", "04.png", "05.png"]


def test_every_image_is_checked_from_its_header_before_anything_is_decoded_or_written(tmp_path, events):
    path, net = official(tmp_path)
    source = photos(tmp_path / "in", [(32, 32)] * 4 + [(2, 2)])  # the last one too small for the generator
    with pytest.raises(ValueError, match=r"04\.png is 2x2 pixels \(4x4 padded to a multiple of 4\), too small"):
        translate_folder(net, source, tmp_path / "out", progress=False)
    assert events == [] and not (tmp_path / "out").exists()


def test_a_file_that_fails_to_decode_midway_is_named_with_what_was_written_before_it(tmp_path):
    _, net = official(tmp_path)
    source = photos(tmp_path / "in", [(32, 32)] * 3)
    intact = (source / "02.png").read_bytes()
    (source / "02.png").write_bytes(intact[:len(intact) // 2])  # its header still reads
    with pytest.raises(ValueError, match=r"cannot read image .*02\.png.*\(2 of 3 images were translated before it\)"):
        translate_folder(net, source, tmp_path / "out", batch_size=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00.png", "01.png"]


def test_an_image_turned_by_its_exif_orientation_is_planned_at_its_upright_size(tmp_path):
    _, net = official(tmp_path)
    (tmp_path / "in").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees: a 40x24 file shows as 24x40
    rgb(40, 24).save(tmp_path / "in" / "turned.jpg", exif=exif)
    rgb(24, 40).save(tmp_path / "in" / "upright.jpg")
    assert image_size(tmp_path / "in" / "turned.jpg") == (24, 40)
    written = translate_folder(net, tmp_path / "in", tmp_path / "out", batch_size=2, progress=False)
    assert [Image.open(p).size for p in written] == [(24, 40), (24, 40)]


@pytest.mark.parametrize("arch", ["resnet_1blocks", "unet_32"])
def test_results_have_their_inputs_size_and_aspect_ratio(tmp_path, arch):
    """45x30 came back 44x32 (rounded to multiples of 4): now every image comes back at its size,
    also for a U-Net, whose multiple is 32 here."""
    path, net = official(tmp_path, arch)
    sizes = [(45, 30), (33, 57), (44, 32), (45, 30)]
    source = photos(tmp_path / "in", sizes)
    code, err = cli("translate", "--checkpoint", str(path), "--arch", arch, "--width", "4",
                    "--input", str(source), "--output", str(tmp_path / "out"), "--batch-size", "3")
    assert code == 0, err
    assert [Image.open(tmp_path / "out" / f"{i:02d}.png").size for i in range(4)] == sizes


def test_translate_image_pads_by_reflection_around_the_image_and_crops_back():
    net = build_generator("resnet_1blocks", width=4).eval()
    image = to_tensor(rgb(45, 30))[None]
    with torch.no_grad():  # 30x45 -> 32x48: 1 row above, 1 below, 1 column left, 2 right
        expected = net(F.pad(image, (1, 2, 1, 1), mode="reflect"))[..., 1:31, 1:46]
        assert torch.equal(translate_image(net, image), expected)
        exact = to_tensor(rgb(44, 32))[None]  # a multiple of 4 already: the network's own output
        assert torch.equal(translate_image(net, exact), net(exact))
    unet = build_generator("unet_32", width=4).eval()
    assert translate_image(unet, image).shape == (1, 3, 30, 45)  # padded to 32x64, wider than the image


def test_translate_image_of_an_image_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match=r"the image is 2x3 pixels \(4x4 padded to a multiple of 4\), too small "
                                         r"for this generator, whose smallest side is 8"):
        translate_image(build_generator("resnet_1blocks", width=4).eval(), torch.zeros(1, 3, 3, 2))


def test_translate_dropout_loads_an_official_dropout_generator(tmp_path):
    """The official --no_dropout off trains ResNet blocks with Dropout layers, which shift the
    blocks' keys: such files could not be loaded from the CLI."""
    path, net = official(tmp_path, "resnet_2blocks", dropout=True)
    source = photos(tmp_path / "in", [(32, 32)])
    argv = ["translate", "--checkpoint", str(path), "--arch", "resnet_2blocks", "--width", "4",
            "--input", str(source), "--output", str(tmp_path / "out")]
    code, err = cli(*argv)
    assert code == 2 and "dropout" in err
    assert cli(*argv, "--dropout")[0] == 0
    with torch.no_grad():
        expected = (net(read_image(source / "00.png")[None])[0] + 1) / 2  # eval mode: dropout off
    assert ((read_image(tmp_path / "out" / "00.png") + 1) / 2 - expected).abs().max() <= 1 / 255 + 1e-6


def test_a_run_folder_and_one_of_its_steps_are_checkpoints(two_steps, tmp_path):
    latest, first = load_checkpoint(two_steps / LATEST), load_checkpoint(step_checkpoints(two_steps)[0])
    assert equal_states(load_generator(two_steps, "BtoA").state_dict(),
                        {k[4:]: v for k, v in latest["nets"].items() if k.startswith("G_B.")})
    assert equal_states(load_generator(two_steps, step=1).state_dict(),
                        {k[4:]: v for k, v in first["nets"].items() if k.startswith("G_A.")})
    assert not equal_states(load_generator(two_steps, step=1).state_dict(), load_generator(two_steps).state_dict())
    source = photos(tmp_path / "in", [(29, 31)])
    for extra in ([], ["--step", "1"]):
        code, err = cli("translate", "--checkpoint", str(two_steps), "--input", str(source),
                        "--output", str(tmp_path / "out"), *extra)
        assert code == 0, err
        assert Image.open(tmp_path / "out" / "00.png").size == (29, 31)


def test_a_missing_step_lists_the_steps_the_run_kept(two_steps, tmp_path):
    code, err = cli("translate", "--checkpoint", str(two_steps), "--step", "5", "--input", str(tmp_path),
                    "--output", str(tmp_path / "o"))
    assert code == 2 and f"the run folder {two_steps} has no checkpoint of step 5" in err
    assert "the steps it kept: 1, 2" in err
    path, _ = official(tmp_path)
    code, err = cli("translate", "--checkpoint", str(path), "--step", "1", "--input", str(tmp_path),
                    "--output", str(tmp_path / "o"))
    assert code == 2 and "picks a checkpoint of a run folder" in err
    (tmp_path / "empty").mkdir()
    code, err = cli("translate", "--checkpoint", str(tmp_path / "empty"), "--input", str(tmp_path),
                    "--output", str(tmp_path / "o"))
    assert code == 2 and "is a folder without a checkpoint" in err
