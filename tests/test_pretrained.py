"""Pretrained CycleGAN generators and the `download` command's names, offline: a local HTTP server
on 127.0.0.1 (with Range requests, and a transfer it cuts short on request) stands in for the
official server."""
import hashlib
import re

import pytest

from cyclelib import build_generator, download, download_pretrained, load_generator, save_official
from cyclelib.cli import download_listing
from cyclelib.download import PRETRAINED_MODELS, DownloadError
from helpers import RangeServer, cli, equal_states, rgb

WIDTH = 4  # a small official-format generator: ResNet-9 with ngf 4 (the published ones have 64)


@pytest.fixture
def official(tmp_path, monkeypatch):
    """The local server as the official pretrained-model server, serving horse2zebra.pth: a small
    generator (``.generator``) in the published files' format, written by save_official."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with RangeServer() as server:
        monkeypatch.setattr(download, "PRETRAINED_URL", server.base + "/{name}.pth")
        monkeypatch.setattr(download, "tqdm", None)  # stderr holds only the messages these tests read
        server.generator = build_generator(width=WIDTH)
        server.files["/horse2zebra.pth"] = save_official(server.generator, tmp_path / "served.pth").read_bytes()
        yield server


def test_a_pretrained_model_lands_in_the_official_layout_and_translates(tmp_path, official, monkeypatch, capsys):
    monkeypatch.setenv("CYCLELIB_CACHE", str(tmp_path / "cache"))

    code, err = cli("download", "--pretrained", "horse2zebra")
    path = tmp_path / "cache" / "horse2zebra_pretrained" / "latest_net_G.pth"
    assert code == 0 and path.read_bytes() == official.files["/horse2zebra.pth"]
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert err == f"note: horse2zebra is unverified (no SHA-256 recorded in cyclelib); it has SHA-256 {sha256} " \
                  f"and {path.stat().st_size} bytes\n"
    printed = capsys.readouterr().out
    assert f"cyclelib translate --checkpoint {path} --input" in printed
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest_net_G.pth"]  # no .part left

    loaded = load_generator(path, width=WIDTH)
    assert equal_states(loaded.state_dict(), official.generator.state_dict())
    (tmp_path / "in").mkdir()
    rgb(36, 28).save(tmp_path / "in" / "a.png")
    code, err = cli("translate", "--checkpoint", str(path), "--input", str(tmp_path / "in"),
                    "--output", str(tmp_path / "out"), "--width", str(WIDTH))
    assert code == 0 and (tmp_path / "out" / "a.png").is_file(), err

    official.files.clear()  # a second call finds the file: no request
    assert download_pretrained("horse2zebra") == path and len(official.ranges) == 1


def test_a_truncated_transfer_is_resumed_with_a_range_request(tmp_path, official):
    official.cut.add("/horse2zebra.pth")
    body = official.files["/horse2zebra.pth"]
    part = tmp_path / "horse2zebra_pretrained" / "latest_net_G.pth.part"
    with pytest.raises(DownloadError, match=rf"{official.base}/horse2zebra\.pth.*run it again to resume from "
                                            rf"{re.escape(str(part))}$"):
        download_pretrained("horse2zebra", tmp_path)
    assert part.read_bytes() == body[:len(body) // 2]
    assert not (tmp_path / "horse2zebra_pretrained" / "latest_net_G.pth").exists()

    path = download_pretrained("horse2zebra", tmp_path)
    assert official.ranges == [None, f"bytes={len(body) // 2}-"]
    assert path.read_bytes() == body and not part.exists()


def test_a_server_without_range_support_starts_over(tmp_path, official):
    part = tmp_path / "horse2zebra_pretrained" / "latest_net_G.pth.part"
    part.parent.mkdir()
    junk = b"junk that is no prefix of the file"
    part.write_bytes(junk)
    official.range_support = False
    path = download_pretrained("horse2zebra", tmp_path)
    assert official.ranges == [f"bytes={len(junk)}-"]  # asked for the rest, got the whole file
    assert path.read_bytes() == official.files["/horse2zebra.pth"] and not part.exists()


def test_a_second_download_of_the_same_file_meanwhile_is_refused(tmp_path, official):
    fcntl = pytest.importorskip("fcntl")
    part = tmp_path / "horse2zebra_pretrained" / "latest_net_G.pth.part"
    part.parent.mkdir()
    with open(part, "ab") as other:  # another download, holding its lock
        other.write(b"half")
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match="another process is downloading it into .*latest_net_G.pth.part"):
            download_pretrained("horse2zebra", tmp_path)
    assert part.read_bytes() == b"half" and official.ranges == []  # untouched, and nothing requested


def test_a_link_at_the_part_file_is_refused_not_written_through(tmp_path, official):
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"keep")
    part = tmp_path / "horse2zebra_pretrained" / "latest_net_G.pth.part"
    part.parent.mkdir()
    part.symlink_to(target)
    with pytest.raises(DownloadError, match=r"latest_net_G\.pth\.part is not a regular file \(a link"):
        download_pretrained("horse2zebra", tmp_path)
    assert target.read_bytes() == b"keep" and official.ranges == []


def test_a_wrong_checksum_is_an_error_and_the_file_is_deleted(tmp_path, official, monkeypatch):
    monkeypatch.setitem(download.PRETRAINED_SHA256, "horse2zebra", "0" * 64)
    code, err = cli("download", "--pretrained", "horse2zebra", "--root", str(tmp_path / "cache"))
    assert code == 1 and err.count("\n") == 1 and "SHA256" in err and "expected " + "0" * 64 in err, err
    assert not (tmp_path / "cache").exists()  # neither the file, nor its .part, nor an empty folder

    monkeypatch.setitem(download.PRETRAINED_SHA256, "horse2zebra",
                        hashlib.sha256(official.files["/horse2zebra.pth"]).hexdigest())
    code, err = cli("download", "--pretrained", "horse2zebra", "--root", str(tmp_path / "cache"))
    assert code == 0 and err == ""  # verified: no note


def test_a_404_is_one_line_naming_the_url_exit_1_and_no_folder_left(tmp_path, official):
    code, err = cli("download", "--pretrained", "zebra2horse", "--root", str(tmp_path / "cache"))
    assert code == 1 and err == f"cyclelib: error: could not download {official.base}/zebra2horse.pth: " \
                                "HTTP Error 404: Not Found\n", err
    assert not (tmp_path / "cache").exists()


def test_cityscapes_gives_the_manual_steps_without_the_network(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(download, "CYCLEGAN_URL", offline + "/{name}.zip")  # a request would fail otherwise
    code, err = cli("download", "cityscapes", "--root", str(tmp_path / "datasets"))
    assert code == 1 and err.count("\n") == 1, err
    assert "licence" in err and "gtFine_trainvaltest.zip" in err and "prepare_cityscapes_dataset.py" in err
    assert "could not download" not in err and not (tmp_path / "datasets").exists()


def _listed(text: str) -> dict[str, list[str]]:
    """The names of each group of the listing: the first word of each indented line."""
    groups = {}
    for block in text.strip().split("\n\n"):
        title, *lines = block.splitlines()
        groups[title.split(" (")[0]] = [line.split()[0] for line in lines]
    return groups


def test_every_listed_name_is_accepted_and_the_errors_list_the_same_names(tmp_path, monkeypatch, capsys):
    called = []
    monkeypatch.setattr("cyclelib.cli.download_dataset", lambda name, root: called.append(("dataset", name)) or root)
    monkeypatch.setattr("cyclelib.cli.download_digits", lambda name, root: called.append(("digits", name)) or root)
    monkeypatch.setattr("cyclelib.cli.download_pretrained", lambda name, root: called.append(("model", name)) or root)
    monkeypatch.setattr("cyclelib.driving.download_gta5", lambda root, parts: called.append(("scenes", "gta5")) or root)
    monkeypatch.setattr("cyclelib.driving.download_cyclegta5", lambda root: called.append(("scenes", "cyclegta5")) or root)
    monkeypatch.setattr("cyclelib.cli.download_release_model", lambda name, root: called.append(("release", name)) or root)
    assert cli("download", "--list") == (0, "")
    groups = _listed(capsys.readouterr().out)
    assert _listed(download_listing()) == groups
    sources = "CyCADA segmentation sources, read as gta5:PATH"
    release = "the CyCADA release's DRN-26 segmenters, each a CyCADA stage"
    assert list(groups) == ["CycleGAN datasets", "digit domains", sources, release,
                            "pretrained CycleGAN generators, with --pretrained"]
    models = groups.pop("pretrained CycleGAN generators, with --pretrained")
    assert models == list(PRETRAINED_MODELS) and len(models) == 18
    monkeypatch.setitem(download.PRETRAINED_SIZES, "zebra2horse", 45_527_315)  # once recorded, the size is shown
    assert "\n  zebra2horse  (45.5 MB)\n" in download_listing() and "\n  horse2zebra\n" in download_listing()
    names = groups["CycleGAN datasets"] + groups["digit domains"] + groups[sources] + groups[release]

    for name in names:
        assert cli("download", name)[0] == 0, name
    for name in models:
        assert cli("download", "--pretrained", name)[0] == 0, name
    offline_digits = {"mnist5k", "uci-digits", "mnistm5k"}
    assert called == [("dataset", n) for n in groups["CycleGAN datasets"]] + \
        [("digits", n) for n in groups["digit domains"] if n not in offline_digits] + \
        [("scenes", n) for n in groups[sources]] + [("release", n) for n in groups[release]] + \
        [("model", n) for n in models]
    assert "ships with cyclelib" in capsys.readouterr().out

    code, err = cli("download", "foo")
    valid, pretrained = re.fullmatch(r"cyclelib: error: download: unknown dataset 'foo'; valid values: (.*) "
                                     r"\(pretrained models with --pretrained: (.*)\)\n", err).groups()
    assert code == 2 and sorted(valid.split(", ")) == sorted(names) and pretrained.split(", ") == models
    code, err = cli("download", "style_monet")
    assert code == 2 and "it is a pretrained model: add --pretrained" in err
    monkeypatch.undo()  # the real download_pretrained refuses an unknown name before any request
    code, err = cli("download", "--pretrained", "foo")
    assert code == 2 and err.split("valid values: ")[1].strip().split(", ") == models
