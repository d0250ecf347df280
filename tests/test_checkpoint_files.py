"""Reading weight files safely: a file's config cannot make cyclelib allocate a huge network,
NaN and Inf weights are refused in every format, a legacy file is verified by its SHA-256, a
flipped byte fails the CRC32 check, safetensors exports round-trip and their metadata is
checksummed and checked entry by entry, the format is read from the first bytes (never the name),
no loader runs the code of a pickle, and a file translate cannot use says what it holds and what
translate needs (shape mismatches naming the tensor).

Every test runs on the CPU in a few seconds, on tiny networks or on files written here.
"""
import hashlib
import inspect
import pickle
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cyclelib import (CycleGAN, build_generator, load_cyclegan, load_generator, load_official, networks, save_official,
                      train_cyclegan)
from cyclelib.cli import main
from cyclelib.classifiers import build_task_network
from cyclelib.integrity import metadata_crc32
from cyclelib.checkpoints import FORMAT_VERSION, load_checkpoint, make_checkpoint, save_checkpoint
from cyclelib.runs import LATEST, load_run_checkpoint
from cyclelib.weights import export_safetensors
from helpers import Payload, cli, corrupt, equal_states, rgb, smoke


def cyclegan_checkpoint(tmp_path: Path, **config) -> dict:
    """A CycleGAN checkpoint dict of the smoke networks (untrained), its config changed by ``config``."""
    model = CycleGAN(smoke(tmp_path / "run"))
    return make_checkpoint("cyclegan", {**asdict(model.config), **config}, model.state_dict())


def translate(tmp_path: Path, checkpoint: Path, *options: str) -> tuple[int, str]:
    """``cyclelib translate`` of one 32x32 image with ``checkpoint``: (exit code, stderr)."""
    (tmp_path / "in").mkdir(exist_ok=True)
    rgb(32, 32).save(tmp_path / "in" / "a.png")
    return cli("translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "out"), *options)


# --------------------------------------------------------------------------- memory bounds


def shallow_only(cls: type, depth: str):
    """``cls.__init__`` that fails the test when its argument ``depth`` is over 1000."""
    original, signature = cls.__init__, inspect.signature(cls.__init__)

    def init(self, *args, **kwargs):
        value = signature.bind(self, *args, **kwargs).arguments.get(depth, 0)
        assert value <= 1000, f"a {cls.__name__} of {value} {depth} was built"
        original(self, *args, **kwargs)
    return init


@pytest.fixture
def no_deep_network(monkeypatch):
    """Building a network of over 1000 blocks or layers, even on the meta device, fails the test:
    such a build takes minutes, and the depth is known from the config before building."""
    for cls, depth in ((networks.ResnetGenerator, "n_blocks"), (networks.UnetGenerator, "num_downs"),
                       (networks.NLayerDiscriminator, "n_layers")):
        monkeypatch.setattr(cls, "__init__", shallow_only(cls, depth))


@pytest.mark.parametrize("config, message", [
    (dict(ngf=100000), "does not fit the networks its config declares: .*shape mismatches"),  # ~720 GB
    (dict(ngf=10 ** 12), "holds an invalid CycleGAN config: Storage size calculation overflowed"),
    (dict(ngf=8.5), "holds an invalid CycleGAN config"),
    (dict(netG="resnet_100000blocks"), "does not fit .*: 100000 blocks or layers in one network, 60 tensors"),
    (dict(netD="n_layers", n_layers_D=10 ** 6), "does not fit .*: 1000000 blocks or layers"),
], ids=str)
def test_a_config_declaring_a_huge_network_is_refused_before_building_it(tmp_path, no_deep_network, config, message):
    """The smoke tensors (ngf=8, 2 resnet blocks) under a config that declares a network too large
    to build: refused naming the file, by every way of loading a CycleGAN from a file."""
    path = tmp_path / "huge.pt"
    save_checkpoint(cyclegan_checkpoint(tmp_path, **config), path)
    with pytest.raises(ValueError, match=rf"huge\.pt {message}"):
        load_cyclegan(path)
    with pytest.raises(ValueError, match=rf"huge\.pt {message}"):
        load_generator(path)
    code, err = translate(tmp_path, path)
    assert code == 2 and "huge.pt" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    # The same config in a safetensors export (exporting builds no network).
    exported = export_safetensors(path, tmp_path / "huge.safetensors")
    with pytest.raises(ValueError, match=rf"huge\.safetensors {message}"):
        load_cyclegan(exported)


def test_a_checkpoint_whose_config_or_nets_is_no_mapping_is_refused(tmp_path):
    for broken in ({"config": [1]}, {"nets": {"G_A.model.1.weight": "x"}}):
        path = save_checkpoint({**cyclegan_checkpoint(tmp_path), **broken}, tmp_path / "broken.pt")
        with pytest.raises(ValueError, match=r"broken\.pt is not a CycleGAN checkpoint"):
            load_cyclegan(path)


# --------------------------------------------------------------------------- NaN and Inf


def nan_file(tmp_path: Path, form: str) -> tuple[Path, str]:
    """A checksum-valid file in ``form`` whose first conv weight holds a NaN (and another tensor
    an Inf), and the name by which the message must give that tensor."""
    if form == "cyclelib checkpoint":
        ckpt = cyclegan_checkpoint(tmp_path)
        ckpt["nets"]["G_A.model.1.weight"][0, 0, 0, 0] = float("nan")
        ckpt["nets"]["G_B.model.1.bias"][0] = float("inf")
        return save_checkpoint(ckpt, tmp_path / "run.pt"), "nets/G_A.model.1.weight"
    state = build_generator("resnet_1blocks", width=4).state_dict()
    state["model.1.weight"][0, 0, 0, 0] = float("nan")
    state["model.1.bias"][0] = float("-inf")
    path = tmp_path / {"zip": "G.pth", "legacy": "G_legacy.pth", "safetensors": "G.safetensors"}[form]
    if form == "safetensors":
        export_safetensors(state, path)  # with valid CRC32s: the NaN is in the weights, not a damaged byte
    else:
        torch.save(state, path, _use_new_zipfile_serialization=form == "zip")
    return path, "model.1.weight"


@pytest.mark.filterwarnings("ignore:.*cannot be verified")
@pytest.mark.parametrize("form", ["zip", "legacy", "safetensors", "cyclelib checkpoint"])
def test_nan_and_inf_weights_are_refused_in_every_format_naming_file_and_tensors(tmp_path, form):
    path, tensor = nan_file(tmp_path, form)
    message = rf"{path.name} is damaged: tensor\(s\) .*{tensor}.* hold NaN or Inf values"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=message):
        load_generator(path, arch="resnet_1blocks", width=4)
    # translate refuses it, rather than write black images and exit 0
    code, err = translate(tmp_path, path, "--arch", "resnet_1blocks", "--width", "4")
    assert code == 2 and f"{path.name} is damaged" in err and tensor in err, err
    assert not (tmp_path / "out").exists()


def test_the_message_names_every_non_finite_tensor_of_a_state_dict(tmp_path):
    path, _ = nan_file(tmp_path, "zip")
    with pytest.raises(ValueError, match=r"tensor\(s\) model\.1\.weight, model\.1\.bias hold NaN or Inf"):
        load_official(path, kind="G", arch="resnet_1blocks", width=4)


def test_a_legacy_pth_is_checked_for_nan_and_inf_and_verified_by_its_sha256(tmp_path):
    """Official files in torch's legacy (pre-1.6, not zip) format have no checksum at all."""
    torch.manual_seed(0)
    state = build_generator("resnet_1blocks", width=4).state_dict()
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    good = path.read_bytes()
    load = dict(kind="G", arch="resnet_1blocks", width=4)
    with pytest.warns(UserWarning, match="cannot be verified .*legacy format has no checksums.*sha256"):
        load_official(path, **load)
    # Damage the first float of the first conv's weights (found by its bytes): an all-ones exponent is NaN.
    offset = good.index(state["model.1.weight"].numpy().tobytes())
    broken = bytearray(good)
    broken[offset + 2:offset + 4] = b"\xc0\x7f"  # little-endian float32: exponent bits all set, a NaN
    path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"damaged: tensor\(s\) model\.1\.weight hold NaN or Inf"):
        load_official(path, **load)
    # A flip that stays finite is only caught by a checksum: the user's (or the publisher's) SHA-256.
    flipped = bytearray(good)
    flipped[offset] ^= 0x01
    path.write_bytes(bytes(flipped))
    sha = hashlib.sha256(good).hexdigest()
    with pytest.raises(ValueError, match="not the expected file: its SHA-256 is"):
        load_official(path, **load, sha256=sha)
    path.write_bytes(good)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified: no warning
        load_official(path, **load, sha256=sha)
    code, err = cli("translate", "--checkpoint", str(path), "--arch", "resnet_1blocks", "--width", "4",
                    "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--sha256", "0" * 64)
    assert code == 2 and "SHA-256" in err


# --------------------------------------------------------------------------- corrupted files and safetensors round trips


def test_torch_alone_would_load_a_flipped_byte(run10, tmp_path):
    """Why load_checkpoint checks CRCs: the corrupted file below loads in torch without error."""
    path = tmp_path / "flipped.pt"
    shutil.copyfile(run10 / "checkpoint.pt", path)
    corrupt(path, "flipped")
    flipped = torch.load(path, weights_only=True)  # no error: silently different numbers
    assert not equal_states(flipped["nets"], load_checkpoint(run10 / "checkpoint.pt")["nets"])
    with pytest.raises(ValueError, match=r"flipped\.pt is corrupted: record .* fails its CRC32 check"):
        load_checkpoint(path)


def test_safetensors_round_trip_of_a_cyclegan_model_and_checkpoint(run10, tmp_path):
    ckpt = load_checkpoint(run10 / "checkpoint.pt")
    model = load_cyclegan(run10 / "checkpoint.pt")
    sources = {"model": model, "checkpoint dict": ckpt, "checkpoint path": run10 / "checkpoint.pt"}
    for name, source in sources.items():
        path = export_safetensors(source, tmp_path / f"{name.replace(' ', '_')}.safetensors")
        state = load_checkpoint(path)
        assert state["kind"] == "cyclegan" and state["version"] == FORMAT_VERSION, name
        assert state["config"] == ckpt["config"], name
        assert equal_states(state["nets"], ckpt["nets"]), name
        assert equal_states(load_cyclegan(path).state_dict(), model.state_dict()), name
        assert equal_states(load_generator(path, "BtoA").state_dict(), model.G_B.state_dict()), name
    assert "optimizers" not in load_checkpoint(tmp_path / "model.safetensors")  # weights only


def test_safetensors_round_trip_of_an_official_generator(tmp_path):
    net = build_generator("resnet_1blocks", width=4, norm="batch").eval()
    official = save_official(net, tmp_path / "latest_net_G_A.pth")
    for source in (net, net.state_dict(), official):
        path = export_safetensors(source, tmp_path / "G.safetensors")
        loaded = load_official(path, kind="G", arch="resnet_1blocks", width=4, norm="batch")
        assert equal_states(loaded.state_dict(), net.state_dict())
    translated = load_generator(tmp_path / "G.safetensors", arch="resnet_1blocks", norm="batch", width=4)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(translated(x), net(x))
    with pytest.raises(ValueError, match=r"G\.safetensors does not fit .*width=8"):
        load_official(tmp_path / "G.safetensors", kind="G", arch="resnet_1blocks", width=8, norm="batch")


def test_bad_safetensors_input_and_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="export_safetensors needs a module, a state_dict"):
        export_safetensors({"nested": {"w": torch.zeros(1)}}, tmp_path / "x.safetensors")
    path = export_safetensors({"w": torch.zeros(100)}, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"cannot read .*cut\.safetensors: truncated or not a safetensors file"):
        load_checkpoint(path)

    # One flipped bit in the data would load as a wrong weight: the CRC32s in the metadata catch it.
    path = export_safetensors({"a": torch.zeros(100), "b": torch.ones(100)}, tmp_path / "flip.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"flip\.safetensors is corrupted: tensor\(s\) [ab] fail the CRC32"):
        load_checkpoint(path)
    # Files written by other tools have no CRC32s and load as they are.
    save_file({"w": torch.arange(4.0)}, tmp_path / "plain.safetensors")
    assert torch.equal(load_checkpoint(tmp_path / "plain.safetensors")["w"], torch.arange(4.0))


# --------------------------------------------------------------------------- safetensors metadata


def test_every_flipped_bit_of_a_safetensors_header_is_refused_naming_the_file(tmp_path):
    """The metadata (kind, config, meta, CRC32s) had no checksum: flips in the config loaded as
    another config. Each byte of the header (its length, the metadata, the tensors' entries),
    flipped in turn, must be refused."""
    ckpt = cyclegan_checkpoint(tmp_path)
    ckpt["nets"] = {"w": torch.arange(4.0)}  # the header is what is tested here
    path = export_safetensors(ckpt, tmp_path / "w.safetensors")
    good = path.read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    assert b'\\"ngf\\": 8' in good[:header_end] and b'"metadata_crc32"' in good[:header_end]
    loaded = []
    for offset in range(header_end):
        damaged = bytearray(good)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            load_checkpoint(path)
            loaded.append(offset)
        except ValueError as e:
            assert str(path) in str(e), (offset, e)
    assert not loaded, f"{len(loaded)} of {header_end} flips loaded, e.g. {good[loaded[0] - 20:loaded[0] + 20]}"
    path.write_bytes(good)
    assert load_checkpoint(path)["config"] == ckpt["config"]


def without_metadata_checksum(path: Path, **entries: str) -> Path:
    """Rewrite an export as cyclelib versions before the metadata checksum wrote it (``entries``
    replace or, when empty, remove metadata entries)."""
    with safe_open(path, framework="pt") as f:
        metadata, tensors = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
    metadata = {key: value for key, value in {**metadata, **entries}.items() if value and key != "metadata_crc32"}
    save_file(tensors, path, metadata)
    return path


def test_exports_of_older_cyclelib_still_load_with_a_warning_that_their_metadata_is_unverified(tmp_path):
    ckpt = cyclegan_checkpoint(tmp_path)
    path = without_metadata_checksum(export_safetensors(ckpt, tmp_path / "old.safetensors"))
    with pytest.warns(UserWarning, match=r"old\.safetensors cannot be verified .*metadata was written without a "
                                         r"checksum"):
        state = load_checkpoint(path)
    assert state["config"] == ckpt["config"] and equal_states(state["nets"], ckpt["nets"])
    # Its tensors are still checked against their CRC32s.
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"old\.safetensors is corrupted: tensor\(s\) "
                                                                     r".* fail the CRC32"):
        load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:.*cannot be verified")
@pytest.mark.parametrize("entries", [
    {"crc32": "{}"}, {"crc32": "[]"}, {"crc32": "x"}, {"crc32": '{"a": "b"}'}, {"crc32": '{"w": "b", "v": 0}'},
    {"crc32": '{"w": 0}'}, {"kind": "banana"}, {"config": "[]"}, {"config": ""}, {"meta": "x"}, {"extra": "1"},
], ids=str)
def test_malformed_safetensors_metadata_is_a_clear_error_never_a_traceback_or_nan_weights(tmp_path, entries):
    """Files as an older cyclelib wrote them (no metadata checksum to catch these first), with one
    entry malformed; ``w`` holds a NaN, ``v`` is sound."""
    ckpt = cyclegan_checkpoint(tmp_path)
    ckpt["nets"] = {"w": torch.tensor([float("nan")]), "v": torch.zeros(2)}
    path = export_safetensors(ckpt, tmp_path / "bad.safetensors")
    without_metadata_checksum(path, **entries)
    with pytest.raises(ValueError, match=r"bad\.safetensors is corrupted: its cyclelib metadata"):
        load_checkpoint(path)
    code, err = translate(tmp_path, path)
    assert code == 2 and str(path) in err and "Traceback" not in err, err


@pytest.mark.parametrize("entries", [{"crc32": "{}"}, {"crc32": "[]"}, {"kind": "banana"}, {"meta": "x"}], ids=str)
def test_malformed_metadata_under_a_valid_metadata_checksum_is_refused_too(tmp_path, entries):
    """A file written by a faulty exporter: checksums that match a malformed structure."""
    path = export_safetensors(cyclegan_checkpoint(tmp_path), tmp_path / "bad.safetensors")
    without_metadata_checksum(path, **entries)
    with safe_open(path, framework="pt") as f:
        metadata, tensors = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
    metadata["metadata_crc32"] = metadata_crc32(metadata)
    save_file(tensors, path, metadata)
    with pytest.raises(ValueError, match=rf"{path.name} is corrupted: its cyclelib metadata .*"
                                         rf"{next(iter(entries))}"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- the format from the first bytes


@pytest.mark.filterwarnings("ignore:.*cannot be verified")
@pytest.mark.parametrize("name", ["w.safetensors", "w.SAFETENSORS", "w.pt", "w.pth", "w.bin", "weights"])
@pytest.mark.parametrize("form", ["zip", "legacy", "safetensors"])
def test_the_format_is_read_from_the_first_bytes_whatever_the_name(tmp_path, form, name):
    state = build_generator("resnet_1blocks", width=4).state_dict()
    path = tmp_path / name
    if form == "safetensors":
        export_safetensors(state, path)
    else:
        torch.save(state, path, _use_new_zipfile_serialization=form == "zip")
    assert equal_states(load_checkpoint(path), state)
    assert equal_states(load_official(path, kind="G", arch="resnet_1blocks", width=4).state_dict(), state)


def random_bytes(brace_at_8: bool) -> bytes:
    """4 KB of seeded random bytes; with ``brace_at_8``, byte 8 is "{" as in a safetensors file
    (1 in 256 random files: a CI run once drew one, and the loader took it for safetensors)."""
    data = bytearray(random.Random(0).randbytes(4096))
    if brace_at_8:
        data[8] = ord("{")
    return bytes(data)


@pytest.mark.parametrize("content", ["random", "random, { at byte 8", "zeros", "text", "empty", "plain pickle"])
def test_bytes_of_no_known_format_are_not_a_checkpoint_and_no_message_suggests_weights_only_false(tmp_path, content):
    marker = tmp_path / "code-ran"
    path = tmp_path / "w.pth"
    path.write_bytes({"random": random_bytes(False), "random, { at byte 8": random_bytes(True), "zeros": bytes(4096),
                      "text": b"not a checkpoint\n" * 10, "empty": b"",
                      "plain pickle": pickle.dumps({"w": Payload(marker)})}[content])
    with pytest.raises(ValueError, match=r"w\.pth is not a checkpoint \(unknown format\)") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)
    code, err = translate(tmp_path, path)
    assert code == 2 and "w.pth is not a checkpoint (unknown format)" in err and "weights_only" not in err, err
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_pickle_that_would_run_code_is_refused_as_such_without_torchs_advice_to_run_it(tmp_path, zip_format):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": Payload(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ValueError, match=r"refusing to load .*evil\.pth: .*could run code .*exec") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value) and "allowlist" not in str(error.value)
    assert not marker.exists()


def test_a_truncated_legacy_file_is_damaged_not_code(tmp_path):
    path = tmp_path / "G.pth"
    torch.save(build_generator("resnet_1blocks", width=4).state_dict(), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    for size in (40, 300, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match=r"cannot read checkpoint .*G\.pth: truncated or damaged") as error:
            load_checkpoint(path)
        assert "weights_only" not in str(error.value), size


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    run.mkdir()
    evil = run / "checkpoint.pt"
    torch.save({"kind": "cyclegan", "nets": {"G_A.model.1.weight": torch.zeros(1)}, "extra": Payload(marker)},
               evil)
    loaders = {
        "load_checkpoint": lambda: load_checkpoint(evil),
        "load_official": lambda: load_official(evil, kind="G", arch="resnet_9blocks"),
        "load_generator": lambda: load_generator(evil),
        "load_cyclegan": lambda: load_cyclegan(evil),
        "export_safetensors": lambda: export_safetensors(evil, tmp_path / "out.safetensors"),
        "resume": lambda: load_run_checkpoint(run),
    }
    for name, load in loaders.items():
        with pytest.raises(ValueError, match="refusing to load .*checkpoint.pt"):
            load()
        assert not marker.exists(), name
    for argv in (["translate", "--checkpoint", str(evil), "--input", str(tmp_path), "--output", str(tmp_path / "o")],
                 ["train", "cyclegan", "--resume", str(run)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and "refusing to load" in capsys.readouterr().err
    assert not marker.exists()
    # The control: the file is armed, a plain torch.load would have run the code.
    torch.load(evil, weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------- files translate cannot use


@pytest.mark.parametrize("kind", ["classifier", "feature"])
def test_translate_of_a_cycada_classifier_says_what_it_holds_and_what_translate_needs(tmp_path, kind):
    prefix = {"classifier": "net.", "feature": "f_t."}[kind]
    nets = {prefix + k: v for k, v in build_task_network("lenet").state_dict().items()}
    path = save_checkpoint(make_checkpoint(kind, {"classifier": "lenet"}, nets, meta={"stage": "source"}),
                           tmp_path / "checkpoint.pt")
    code, err = translate(tmp_path, path)
    assert code == 2 and f"checkpoint.pt holds a CyCADA {kind} network, not a generator" in err, err
    assert "a CyCADA run's pixel/checkpoint.pt" in err


def test_shape_mismatches_name_the_tensor_and_both_shapes(tmp_path):
    train_cyclegan(smoke(tmp_path / "run", max_steps=1), progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / LATEST)
    ckpt["nets"]["G_A.model.1.weight"] = torch.zeros(3, 3, 7, 7)
    save_checkpoint(ckpt, tmp_path / "bad.pt")
    message = r"G_A\.model\.1\.weight: file \(3, 3, 7, 7\) vs network \(8, 3, 7, 7\)"
    with pytest.raises(ValueError, match=message):
        load_cyclegan(tmp_path / "bad.pt")
    export_safetensors(ckpt, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=message):
        load_cyclegan(tmp_path / "bad.safetensors")
    code, err = cli("translate", "--checkpoint", str(tmp_path / "bad.pt"), "--input", str(tmp_path),
                    "--output", str(tmp_path / "o"))
    assert code == 2 and "G_A.model.1.weight" in err
