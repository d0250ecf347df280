"""FID and KID (cyclelib.evaluate): the arithmetic against closed forms and independent code,
the folder handling and its protocol, and `cyclelib evaluate`, all offline with stand-in
feature extractors; the real Inception-v3 only where its weights can be had."""
import json
import sys

import numpy as np
import pytest
import torch
from helpers import DIGITS, cli, cycada_smoke, rgb, smoke
from PIL import Image

from cyclelib import evaluate, evaluate_folders, fid, kid, run_cycada, train_cyclegan
from cyclelib.evaluate import compute_features, inception_features


def colour_stats(images: torch.Tensor) -> torch.Tensor:
    """A stand-in feature extractor: each channel's mean and std, [N, 3, H, W] uint8 -> [N, 6]."""
    x = images.float()
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def write_images(folder, n, seed=0, size=(16, 16), mode="RGB", shift=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rgb(*size, seed=seed + i)
        if shift:
            image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) // 2 + shift, 0, 255).astype(np.uint8))
        image.convert(mode).save(folder / f"{i:03d}.png")
    return folder


# --------------------------------------------------------------------------- FID

def test_fid_matches_the_closed_form_of_two_gaussians():
    # Diagonal covariances: (S1 S2)^1/2 is the elementwise sqrt, so the FID of the two Gaussians is known
    # exactly. Measured over 30 seeds at n = 20,000: sample FID - true FID has mean 0.004, std 0.029
    # and a largest |error| of 0.051; 0.15 is 5 std.
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.5, 0.0, -0.5])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 0.5, 3.0])
    true = ((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum()  # 2.379
    rng = np.random.default_rng(0)
    x = mu1 + np.sqrt(var1) * rng.normal(size=(20000, d))
    y = mu2 + np.sqrt(var2) * rng.normal(size=(20000, d))
    assert fid(x, y) == pytest.approx(true, abs=0.15)
    assert fid(y, x) == pytest.approx(fid(x, y), rel=1e-9)


def test_fid_of_full_covariances_matches_scipy_sqrtm():
    # An independent route: the matrix square root of S1 S2 by scipy, as pytorch-fid computes it.
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    y = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8)) + 0.3
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = (((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(sqrtm(s1 @ s2).real))
    assert fid(x, y) == pytest.approx(expected, rel=1e-8)


def test_fid_of_a_set_with_itself_is_zero_even_with_fewer_samples_than_dimensions():
    # 120 images and 2048 features, as Inception's of a test set: singular covariances, where a square root
    # of eigenvalues would turn their round-off (1e-14) into 1e-7 each; singular values do not.
    x = np.random.default_rng(2).normal(size=(120, 2048))
    assert abs(fid(x, x)) < 1e-9
    assert fid(x, x + 1.0) == pytest.approx(2048, rel=1e-9)  # a pure shift: ||mu1 - mu2||^2
    y = np.random.default_rng(3).normal(size=(130, 2048))
    assert fid(x, y) == pytest.approx(fid(x[:, ::-1], y[:, ::-1]), rel=1e-9)  # feature order does not matter


def test_fid_refuses_bad_features():
    with pytest.raises(ValueError, match="differ in dimension"):
        fid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        fid(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\[N, D\] with N >= 2"):
        fid(np.zeros(5), np.zeros((5, 1)))


# --------------------------------------------------------------------------- KID

def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    # Subsets as large as the sets: every subset is the whole set, and KID is one MMD^2, here
    # written out as the double sums of Binkowski et al. (2018), eq. (3), kernel (x.y/d + 1)^3.
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.4
    m, d = 12, 5
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    mean, std = kid(x, y, subsets=5)
    assert mean == pytest.approx(within - 2 * across, rel=1e-10)
    assert std == pytest.approx(0, abs=1e-12)


def test_kid_matches_torch_fidelity():
    metric_kid = pytest.importorskip("torch_fidelity.metric_kid")
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 16)), rng.normal(size=(60, 16)) * 1.2
    theirs = metric_kid.kid_features_to_metric(torch.tensor(x), torch.tensor(y), kid_subsets=1, kid_subset_size=60,
                                               kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                               kid_kernel_poly_coef0=1, rng_seed=0, verbose=False)
    assert kid(x, y, subsets=1)[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift():
    # Test-set sizes (140 and 120, subsets of 120). Measured over 30 seeds: the KID of two samples of one
    # Gaussian has mean 0.009 and std 0.056 (the mean of 20 is within 0.05 of 0 at 4 std), while the biased
    # V-statistic has mean 0.18 and a shift of 0.5 gives at least 0.83.
    same, shifted = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(140, 4)), rng.normal(size=(120, 4))
        same.append(kid(x, y, seed=seed)[0])
        shifted.append(kid(x, y + 0.5, seed=seed)[0])
    assert abs(np.mean(same)) < 0.05
    assert min(shifted) > 0.4


def test_kid_subsets_fit_small_test_sets():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(140, 3)), rng.normal(size=(130, 3))
    mean, std = kid(x, y)  # default subset size min(1000, 140, 130) = 130: the larger set is subsampled
    assert std > 0
    with pytest.raises(ValueError, match=r"subset_size must be between 2 and the smaller set's size \(130\)"):
        kid(x, y, subset_size=131)


# --------------------------------------------------------------------------- folders

def test_evaluate_folders_computes_features_of_every_image_with_the_injected_extractor(tmp_path):
    fake = write_images(tmp_path / "fake", 7, seed=0)
    real = write_images(tmp_path / "real", 9, seed=100, shift=60)
    (tmp_path / "real" / "nested").mkdir()
    write_images(tmp_path / "real" / "nested", 2, seed=200, size=(24, 20))  # another size, in a subfolder
    result = evaluate_folders(fake, real, colour_stats, batch_size=3, kid_subsets=10,
                              out=tmp_path / "result.json", protocol={"split": "test"})
    # The same features, computed here without the folder code.
    def features(paths):
        return colour_stats(torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                                         for p in paths])).double().numpy()
    fake_f = features(sorted(fake.glob("*.png")))
    real_f = np.concatenate([features(sorted(real.glob("*.png"))), features(sorted(real.glob("nested/*.png")))])
    assert result["fid"] == pytest.approx(fid(fake_f, real_f), rel=1e-9)
    assert result["kid_mean"] == pytest.approx(kid(fake_f, real_f, 10, 7)[0], rel=1e-9)
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert {k: result[k] for k in ("fake_images", "real_images", "kid_subset_size", "kid_subsets",
                                   "feature_dimension", "split", "channels")} == {
        "fake_images": 7, "real_images": 11, "kid_subset_size": 7, "kid_subsets": 10, "feature_dimension": 6,
        "split": "test", "channels": "colour"}
    assert result["extractor"] == "colour_stats" and result["package"] is None and "resize" in result


def test_folder_errors_name_the_folder_or_file(tmp_path):
    good = write_images(tmp_path / "good", 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="the fake folder .*missing"):
        evaluate_folders(tmp_path / "missing", good, colour_stats)
    with pytest.raises(ValueError, match=r"the real folder .*empty holds 0 image files"):
        evaluate_folders(good, tmp_path / "empty", colour_stats)
    broken = write_images(tmp_path / "broken", 3)
    (broken / "001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken/001\.png"):
        evaluate_folders(broken, good, colour_stats)
    grey = write_images(tmp_path / "grey", 3, mode="L")
    with pytest.raises(ValueError, match=r"images in .*grey are all greyscale and those in .*good are in colour"):
        evaluate_folders(good, grey, colour_stats)


def test_greyscale_folders_are_compared_as_three_equal_channels(tmp_path):
    seen = []
    def spy(images):
        seen.append(images)
        return colour_stats(images)
    result = evaluate_folders(write_images(tmp_path / "a", 3, mode="L"), write_images(tmp_path / "b", 3, 9, mode="L"),
                              spy, kid_subsets=2)
    assert result["channels"] == "greyscale"
    assert all(b.dtype == torch.uint8 and b.shape[1] == 3 and torch.equal(b[:, 0], b[:, 2]) for b in seen)


def test_an_extractor_returning_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"must map images \[N, 3, H, W\] to features \[N, D\]"):
        compute_features([torch.zeros(4, 3, 8, 8, dtype=torch.uint8)], lambda images: torch.zeros(3, 2))


# --------------------------------------------------------------------------- the CLI

@pytest.fixture
def stand_in_inception(monkeypatch):
    """`cyclelib evaluate` with colour_stats where it would build the Inception-v3 extractor."""
    built = []
    def build(device=None):
        built.append(device)
        return colour_stats
    monkeypatch.setattr(evaluate, "inception_features", build)
    return built


def test_cli_evaluate_folders_goes_through_the_same_code_path(tmp_path, stand_in_inception):
    fake = write_images(tmp_path / "fake", 5)
    real = write_images(tmp_path / "real", 6, seed=50, shift=40)
    code, err = cli("evaluate", "--fake", str(fake), "--real", str(real), "--json", str(tmp_path / "e.json"),
                    "--kid-subsets", "4", "--device", "cpu")
    assert code == 0, err
    assert stand_in_inception == ["cpu"]
    written = json.loads((tmp_path / "e.json").read_text())
    assert written == evaluate_folders(fake, real, colour_stats, kid_subsets=4)


def test_cli_evaluate_refuses_half_given_inputs(tmp_path, stand_in_inception):
    code, err = cli("evaluate", "--fake", str(tmp_path))
    assert code == 2 and "give either --checkpoint and --data" in err
    code, err = cli("evaluate", "--fake", str(tmp_path), "--real", str(tmp_path / "nothing"), "--json",
                    str(tmp_path / "e.json"))
    assert code == 2 and "the fake folder" in err and "holds 0 image files" in err
    assert not (tmp_path / "e.json").exists() and stand_in_inception == []
    code, err = cli("evaluate", "--fake", str(tmp_path), "--real", str(tmp_path), "--oracle", "oracle.pt")
    assert code == 2 and "--oracle and --translations apply to a run" in err


def test_cli_evaluate_without_torch_fidelity_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)  # import fails
    fake, real = write_images(tmp_path / "fake", 2), write_images(tmp_path / "real", 2, seed=5)
    code, err = cli("evaluate", "--fake", str(fake), "--real", str(real), "--json", str(tmp_path / "e.json"))
    assert code == 1 and "pip install 'cyclelib[eval]'" in err


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    """A two-step CycleGAN run on mnist5k:mnistm5k and a CyCADA oracle stage on mnistm5k."""
    folder = tmp_path_factory.mktemp("evaluate")
    train_cyclegan(smoke(folder / "run", max_steps=2))
    oracle = cycada_smoke(folder / "cycada")
    run_cycada(oracle, stages="oracle", progress=False)
    return folder / "run", folder / "cycada" / "oracle" / "checkpoint.pt"


@pytest.mark.slow
def test_cli_evaluate_a_digit_run_with_the_oracle(digit_run, tmp_path, stand_in_inception):
    run, oracle = digit_run
    code, err = cli("evaluate", "--checkpoint", str(run), "--data", DIGITS, "--oracle", str(oracle),
                    "--kid-subsets", "3", "--device", "cpu")
    assert code == 0, err
    result = json.loads((run / "evaluate_AtoB_test.json").read_text())
    assert result["checkpoint"] == str(run / "checkpoint.pt") and result["step"] == 2
    assert (result["direction"], result["split"], result["data"]) == ("AtoB", "test", DIGITS)
    assert result["fake_images"] == result["real_images"] == 1000  # mnist5k's and mnistm5k's test splits
    assert 0 <= result["label_preservation"] <= 1 and result["oracle_accuracy"] > 0.1
    assert result["fid"] > 0 and result["feature_dimension"] == 6


@pytest.mark.slow
def test_cli_evaluate_a_run_on_an_image_folder(digit_run, tmp_path, stand_in_inception):
    run, _ = digit_run
    data = tmp_path / "data"
    write_images(data / "testA", 4, size=(32, 32))
    write_images(data / "testB", 5, seed=20, size=(32, 32))
    code, err = cli("evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(data), "--direction",
                    "BtoA", "--translations", str(tmp_path / "fakes"), "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert len(list((tmp_path / "fakes").glob("*.png"))) == 5  # testB translated, compared with testA
    assert (result["fake_images"], result["real_images"], result["real"]) == (5, 4, str(data / "testA"))
    assert result["fake"] == str(tmp_path / "fakes") and result["direction"] == "BtoA"
    code, err = cli("evaluate", "--checkpoint", str(run), "--data", str(data), "--json", str(tmp_path / "t.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "t.json").read_text())["fake"] == f"{data / 'testA'} translated AtoB, in a deleted " \
                                                                     "temporary folder"
    code, err = cli("evaluate", "--checkpoint", str(run), "--data", str(data), "--oracle", str(run))
    assert code == 2 and "--oracle applies to digit domains" in err


# --------------------------------------------------------------------------- the real Inception-v3

@pytest.mark.slow
def test_the_inception_network_runs_through_evaluate_folders_with_random_weights(tmp_path, monkeypatch):
    # The network torch-fidelity builds, without its weights (offline): checks the wiring (uint8 images of
    # any size in, 2048 features out, the protocol), not the numbers.
    inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    monkeypatch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: None)
    monkeypatch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    torch.manual_seed(0)
    result = evaluate_folders(write_images(tmp_path / "a", 3, size=(40, 30)), write_images(tmp_path / "b", 3, 7),
                              inception_features("cpu"), kid_subsets=2)
    assert result["feature_dimension"] == 2048 and result["fid"] >= 0
    assert result["package"].startswith("torch-fidelity ") and "299x299" in result["resize"]
    assert result["extractor"].startswith("Inception-v3 pool3")


def test_inception_features_are_2048_per_image():
    pytest.importorskip("torch_fidelity")
    try:
        extract = inception_features("cpu")
    except OSError as e:
        pytest.skip(f"the Inception-v3 weights cannot be fetched here (offline?): {e}")
    images = torch.from_numpy(np.stack([np.asarray(rgb(64, 48, seed=s)) for s in range(2)])).permute(0, 3, 1, 2)
    features = extract(images)
    assert features.shape == (2, 2048) and features.dtype == torch.float64
    assert extract.package.startswith("torch-fidelity ")
