"""`cyclelib test`: both directions of a run or an official pair over a dataset's test split,
real / fake / reconstruction per image at the input's size, and an index.html that reads offline."""
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from PIL import Image

from cyclelib import build_generator, load_pair, save_official, write_test_page
from cyclelib.images import read_image
from cyclelib.translate import translate_image
from helpers import cli, rgb


class Page(HTMLParser):
    """The image sources of an HTML page, and the text of its table cells, table by table."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.tables, self.cell = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "td":
            self.cell = ""

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag == "td":
            if self.cell:
                self.tables[-1].append(self.cell)
            self.cell = None


def dataset(root: Path, names_A, names_B, sizes=((45, 30), (33, 57), (40, 40))) -> Path:
    for side, names in (("A", names_A), ("B", names_B)):
        (root / f"test{side}").mkdir(parents=True)
        for i, name in enumerate(names):
            rgb(*sizes[i % len(sizes)], seed=i).save(root / f"test{side}" / name)
    return root


def check_page(results: Path) -> Page:
    """The parsed index.html, once every image it shows is known to exist below ``results``."""
    page = Page((results / "index.html").read_text(encoding="utf-8"))
    missing = [src for src in page.images if not (results / unquote(src)).is_file()]
    assert page.images and not missing, missing
    return page


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    torch.manual_seed(0)
    G_A = build_generator("resnet_1blocks", 3, 1, width=4).eval()  # A: colour, B: grey
    G_B = build_generator("resnet_1blocks", 1, 3, width=4).eval()
    return save_official(G_A, folder / "latest_net_G_A.pth"), save_official(G_B, folder / "latest_net_G_B.pth"), G_A, G_B


def test_an_official_pair_gives_real_fake_and_reconstruction_at_each_inputs_size(pair, tmp_path):
    path_A, path_B, G_A, G_B = pair
    data = dataset(tmp_path / "data", ["a 1#.png", "b&<c>.jpg", "c.png"], ["x.png", "y.png"])
    results = tmp_path / "results"
    code, err = cli("test", "--checkpoint-A", str(path_A), "--checkpoint-B", str(path_B), "--arch", "resnet_1blocks",
                    "--width", "4", "--output-nc", "1", "--dataroot", str(data), "--results", str(results))
    assert code == 0, err
    page = check_page(results)
    assert page.tables == [["a 1#.png", "b&<c>.png", "c.png"], ["x.png", "y.png"]]
    assert len(page.images) == 3 * 5
    for direction, name, size in (("AtoB", "a 1#.png", (45, 30)), ("AtoB", "b&<c>.png", (33, 57)),
                                  ("BtoA", "y.png", (33, 57))):
        for kind in ("real", "fake", "rec"):
            assert Image.open(results / direction / kind / name).size == size, (direction, kind, name)
    real = read_image(results / "AtoB" / "real" / "c.png")
    expected = (translate_image(G_A, real[None])[0] + 1) / 2
    fake = (read_image(results / "AtoB" / "fake" / "c.png", channels=1) + 1) / 2
    assert (fake - expected).abs().max() <= 1 / 255 + 1e-6


def test_a_run_folder_at_any_step_and_num_test(two_steps, tmp_path):
    data = dataset(tmp_path / "data", ["1.png", "2.png", "3.png"], ["4.png", "5.png", "6.png"])
    for step, results in ((None, tmp_path / "latest"), (1, tmp_path / "first")):
        G_A, G_B, source = load_pair(two_steps, step=step)
        assert source.endswith("checkpoint.pt" if step is None else "step_0000001.pt")
        page = write_test_page(G_A, G_B, data, results, num_test=2, progress=False, title=source)
        assert check_page(results).tables == [["1.png", "2.png"], ["4.png", "5.png"]]
        assert sorted(p.name for p in (results / "BtoA" / "fake").iterdir()) == ["4.png", "5.png"]
        assert source in page.read_text()
    assert (tmp_path / "latest/AtoB/fake/1.png").read_bytes() != (tmp_path / "first/AtoB/fake/1.png").read_bytes()
    code, err = cli("test", "--checkpoint", str(two_steps), "--step", "2", "--dataroot", str(data),
                    "--results", str(tmp_path / "cli"), "--num-test", "1")
    assert code == 0, err
    assert check_page(tmp_path / "cli").tables == [["1.png"], ["4.png"]]


def test_phase_picks_the_split(pair, tmp_path):
    path_A, path_B, _, _ = pair
    data = dataset(tmp_path / "data", ["t.png"], ["t.png"])
    for side in "AB":
        (data / f"val{side}").mkdir()
        rgb(20, 24).save(data / f"val{side}" / "v.png")
    code, err = cli("test", "--checkpoint-A", str(path_A), "--checkpoint-B", str(path_B), "--arch",
                    "resnet_1blocks", "--width", "4", "--output-nc", "1", "--dataroot", str(data),
                    "--results", str(tmp_path / "r"), "--phase", "val")
    assert code == 0, err
    assert check_page(tmp_path / "r").tables == [["v.png"], ["v.png"]]


def test_errors_are_named_before_anything_is_written(pair, two_steps, tmp_path):
    path_A, path_B, _, _ = pair
    data = tmp_path / "data"
    (data / "testA").mkdir(parents=True)
    rgb(32, 32).save(data / "testA" / "a.png")
    official = ["--arch", "resnet_1blocks", "--width", "4", "--output-nc", "1"]
    results = tmp_path / "results"
    for argv, message in (
            (["--checkpoint-A", str(path_A), "--checkpoint-B", str(path_B), *official],
             f"input folder {data / 'testB'} does not exist"),
            (["--checkpoint", str(two_steps), "--step", "9"], "the steps it kept: 1, 2"),
            (["--checkpoint", str(path_A), *official], "holds one generator (an official file)"),
            (["--checkpoint-A", str(path_A)], "give --checkpoint"),
            (["--checkpoint", str(two_steps), "--checkpoint-A", str(path_A)], "give --checkpoint")):
        code, err = cli("test", "--dataroot", str(data), "--results", str(results), *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert not results.exists()
    (data / "testB").mkdir()
    rgb(32, 32).save(data / "testB" / "b.png")
    rgb(32, 32).save(data / "testB" / "b.jpg")
    code, err = cli("test", "--checkpoint", str(two_steps), "--dataroot", str(data), "--results", str(results))
    assert code == 2 and "would both be shown as b.png" in err
    code, err = cli("test", "--checkpoint", str(two_steps), "--dataroot", str(data), "--results", str(data / "testA" / "r"))
    assert code == 2 and f"the results folder {data / 'testA' / 'r'} lies inside the input folder" in err
    assert not results.exists()
