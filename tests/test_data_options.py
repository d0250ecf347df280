"""The official data options: --direction, --serial-batches, input_nc != output_nc, and batch norm
under torchrun (--norm syncbatch)."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import CycleGAN, CycleGANConfig, load_checkpoint, train_cyclegan
from cyclelib import distributed
from cyclelib.data import EpochSampler, Unpaired, UnpairedImageFolder, open_unpaired
from cyclelib.translate import load_generator, translate_folder
from helpers import DIGITS, cli, equal_states, image_folder, package_env, smoke, train_pair


# --------------------------------------------------------------------------- direction


def test_btoa_reads_the_second_domain_as_a(tmp_path):
    """Digits "a:b" and folders trainA/trainB swap: A is b (trainB), B is a (trainA), with their channels."""
    forward, backward = open_unpaired(DIGITS), open_unpaired(DIGITS, direction="BtoA", channels=1, channels_b=3)
    assert backward.a[5][0].shape[0] == 1 and backward.b[5][0].shape[0] == 3
    assert torch.equal(open_unpaired(DIGITS, direction="BtoA").a[5][0], forward.b[5][0])
    assert torch.equal(open_unpaired(DIGITS, direction="BtoA").b[5][0], forward.a[5][0])
    root = train_pair(tmp_path / "data", count=2)
    folder = UnpairedImageFolder(root, direction="BtoA")
    assert [p.parent.name for p in folder.a.paths + folder.b.paths] == ["trainB"] * 2 + ["trainA"] * 2
    with pytest.raises(ValueError, match="valid values: AtoB, BtoA"):
        open_unpaired(DIGITS, direction="sideways")


def test_btoa_trains_g_a_from_b_to_a_and_translate_names_the_data_domains(tmp_path):
    """A BtoA run on mnist5k:mnistm5k is, bit for bit, the AtoB run on mnistm5k:mnist5k: its G_A maps
    MNIST-M to MNIST. translate --direction AtoB still turns the data's A (mnist5k) into B, so it
    takes the BtoA run's G_B, the generator of the swapped AtoB run's BtoA."""
    swapped = tmp_path / "swapped"
    btoa = tmp_path / "btoa"
    train_cyclegan(smoke(swapped, data="mnistm5k:mnist5k", max_steps=2), progress=False)
    train_cyclegan(smoke(btoa, direction="BtoA", max_steps=2), progress=False)
    a, b = load_checkpoint(swapped / "checkpoint.pt"), load_checkpoint(btoa / "checkpoint.pt")
    assert b["config"]["direction"] == "BtoA"
    assert equal_states(a["nets"], b["nets"]) and a["history"] == b["history"]
    for direction, other in (("AtoB", "BtoA"), ("BtoA", "AtoB")):
        assert equal_states(load_generator(btoa, direction).state_dict(), load_generator(swapped, other).state_dict())
    model = CycleGAN(CycleGANConfig(**b["config"]))
    assert model.generator("AtoB") is model.G_B and model.generator("BtoA") is model.G_A


def test_direction_is_fixed_on_resume(tmp_path):
    train_cyclegan(smoke(tmp_path, direction="BtoA", max_steps=1), progress=False)
    with pytest.raises(ValueError, match="direction='BtoA' there, 'AtoB' now"):
        train_cyclegan(smoke(tmp_path, max_steps=2), resume=True, progress=False)
    code, err = cli("train", "cyclegan", "--resume", str(tmp_path), "--direction", "AtoB")
    assert code == 2 and "direction='BtoA' there, 'AtoB' now" in err


def test_direction_and_serial_batches_are_options_with_their_official_names():
    from cyclelib.cli import build_parser
    args = build_parser().parse_args(["train", "cyclegan", "--direction", "BtoA", "--serial_batches"])
    assert args.direction == "BtoA" and args.serial_batches is True
    code, err = cli("train", "cyclegan", "--data", DIGITS, "--direction", "sideways")
    assert code == 2 and "cyclelib: error:" in err and "AtoB" in err


# --------------------------------------------------------------------------- serial batches


def test_serial_batches_pair_a_i_with_b_i_mod_b_and_keep_the_epochs_crops(tmp_path):
    """As the official --serial_batches: B item i % |B| (not a random one) and the epoch in file order;
    crops and flips are still drawn per (seed, epoch, index), so epochs differ and a run is reproducible."""
    root = train_pair(tmp_path, count=3)
    image_folder(root / "trainB", 5, seed=100)  # 5 B images against 3 A images
    serial = UnpairedImageFolder(root, serial=True, load_size=36, crop_size=32)
    assert len(serial) == 5
    assert [serial[i]["B_index"] for i in range(5)] == [0, 1, 2, 3, 4]
    assert [serial[i]["A_index"] for i in range(5)] == [0, 1, 2, 0, 1]
    shuffled = UnpairedImageFolder(root, load_size=36, crop_size=32)
    assert [shuffled[i]["B_index"] for i in range(5)] != [0, 1, 2, 3, 4]  # seed 0's draws
    first = serial[0]["A"]
    serial.set_epoch(1)
    assert not torch.equal(serial[0]["A"], first)  # another crop or flip in another epoch
    serial.set_epoch(0)
    assert torch.equal(serial[0]["A"], first)


def test_epoch_sampler_in_order_every_epoch_split_over_ranks_and_resumable():
    for seed, epoch in ((0, 0), (3, 7)):
        assert list(EpochSampler(5, seed, epoch, shuffle=False)) == [0, 1, 2, 3, 4]
    assert list(EpochSampler(5, 0, 0, shuffle=False, limit=3)) == [0, 1, 2]
    assert list(EpochSampler(5, 0, 0, start=2, shuffle=False)) == [2, 3, 4]
    ranks = [list(EpochSampler(5, 0, 0, rank=r, world_size=2, shuffle=False)) for r in (0, 1)]
    assert ranks == [[0, 2, 4], [1, 3, 0]]


def test_serial_batches_run_trains_in_file_order(tmp_path, monkeypatch):
    """A folder run with serial_batches sees A in file order with B partner i mod |B|."""
    root = train_pair(tmp_path / "data", count=4)
    seen = []
    original = Unpaired.__getitem__
    monkeypatch.setattr(Unpaired, "__getitem__", lambda self, i: seen.append(i) or original(self, i))
    config = smoke(tmp_path / "run", data=root, serial_batches=True, batch_size=1, max_steps=4, sample_every=1000)
    train_cyclegan(config, progress=False)
    assert seen[-4:] == [0, 1, 2, 3]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["serial_batches"] is True


# --------------------------------------------------------------------------- input_nc != output_nc


def test_grey_to_colour_trains_and_translates(tmp_path):
    """input_nc 1, output_nc 3 with the identity loss off: A (trainA) is read grey, B in colour; G_A
    makes colour images of grey ones, G_B grey images of colour ones."""
    root = train_pair(tmp_path / "data", count=2)
    config = smoke(tmp_path / "run", data=root, input_nc=1, output_nc=3, lambda_identity=0.0, max_steps=2,
                   sample_every=2)
    model = train_cyclegan(config, progress=False)
    assert (model.G_A.input_nc, model.G_A.output_nc) == (1, 3)
    assert (tmp_path / "run" / "samples" / "step_000002.png").is_file()
    photos = image_folder(tmp_path / "photos", 2, size=(32, 32))
    for direction, grey in (("AtoB", False), ("BtoA", True)):
        out = tmp_path / direction
        translate_folder(load_generator(tmp_path / "run", direction), photos, out, device="cpu", progress=False)
        for path in sorted(out.iterdir()):  # written as RGB either way (torchvision's save_image)
            pixels = np.asarray(Image.open(path).convert("RGB"), dtype=int)
            assert pixels.shape == (32, 32, 3)
            assert (pixels.max(-1) == pixels.min(-1)).all() == grey


def test_identity_with_other_channel_counts_is_refused():
    with pytest.raises(ValueError, match=r"needs input_nc == output_nc \(got 1 and 3\); set lambda_identity 0"):
        CycleGANConfig(input_nc=1, output_nc=3)
    code, err = cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--input-nc", "1")
    assert code == 2 and "cyclelib: error:" in err and "--lambda-identity 0" in err
    with pytest.raises(ValueError, match="output_nc must be 1 .* or 3"):
        train_cyclegan(smoke("unused", output_nc=2, lambda_identity=0), progress=False)


# --------------------------------------------------------------------------- batch norm under torchrun


def test_syncbatch_in_one_process_is_batch_norm(tmp_path):
    """One process has no statistics to share: syncbatch trains as batch, bit for bit, same keys."""
    runs = {}
    for norm in ("batch", "syncbatch"):
        train_cyclegan(smoke(tmp_path / norm, norm=norm, max_steps=2), progress=False)
        runs[norm] = load_checkpoint(tmp_path / norm / "checkpoint.pt")
    assert equal_states(runs["batch"]["nets"], runs["syncbatch"]["nets"])


def test_syncbatch_converts_every_batch_norm_keeping_the_weights():
    model = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, norm="syncbatch"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for net in (model.G_A, model.G_B, model.D_A, model.D_B):
        distributed.sync_batch_norm(net)
    layers = [type(m) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert layers and set(layers) == {torch.nn.SyncBatchNorm}
    assert equal_states(before, model.state_dict())


def test_batch_norm_over_several_processes_is_refused_and_syncbatch_needs_gpus():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    for norm in ("instance", "none", "batch", "syncbatch"):
        distributed.check_norm(norm, 1, cpu)  # one process: every norm
    distributed.check_norm("syncbatch", 2, cuda)
    with pytest.raises(ValueError, match="use norm 'syncbatch'"):
        distributed.check_norm("batch", 2, cuda)
    with pytest.raises(ValueError, match="over GPUs only"):
        distributed.check_norm("syncbatch", 2, cpu)


@pytest.mark.slow  # two torchrun launches of two processes each
@pytest.mark.parametrize("norm, message", [("batch", "use norm 'syncbatch'"), ("syncbatch", "over GPUs only")])
def test_torchrun_on_cpu_refuses_batch_norm_before_training(tmp_path, norm, message):
    """Two Gloo ranks on CPU: batch norm would be unsynchronised, and SyncBatchNorm refuses CPU tensors
    (torch.nn.SyncBatchNorm's forward), so both are usage errors before any file is written."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cyclelib", "train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--norm", norm,
               "--out", str(out)]
    done = subprocess.run(command, env=package_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "cyclelib: error:" in done.stderr and message in done.stderr
    assert not out.exists()
