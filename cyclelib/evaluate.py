r"""FID and KID: how close a set of generated images is to a set of real ones.

Both compare the two sets through the pool3 features (2048 per image) of the Inception-v3
network trained on ImageNet: :func:`fid` fits a Gaussian to each set of features (Heusel et
al. 2017), :func:`kid` compares them with a polynomial-kernel MMD (Binkowski et al. 2018).
The arithmetic is here, once each, on plain arrays; the features come from one package,
torch-fidelity, because

- its Inception-v3 is the TensorFlow FID reference network, ported with weights converted
  from the original graph and a bilinear resize written to match TensorFlow 1.x, so its
  numbers match those of the papers' code (torchvision's Inception-v3 has other weights, and
  pytorch-fid resizes with torch's bilinear interpolation, not TensorFlow's; torchmetrics'
  FID itself runs this torch-fidelity network);
- it needs nothing beyond cyclelib's own dependencies (torch, torchvision, numpy, pillow,
  tqdm), while clean-fid brings requests and its own resize protocol.

Its weights (~100 MB) are downloaded on first use and cached by torch's hub
(``~/.cache/torch/hub/checkpoints``). The feature extractor is a parameter everywhere: any
callable from images ``[N, 3, H, W]`` uint8 to features ``[N, D]`` (tests use stand-ins;
the CLI builds the Inception one with :func:`inception_features`).

The protocol is part of the result (:func:`evaluate_folders` writes it next to the numbers):
images are read as 8-bit RGB at their own size (greyscale repeated to three channels) and
resized only inside the extractor, Inception's to 299 x 299.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .cycada import stage_network
from .digits import digit_domain
from .names import domain_pair, is_labelled_pair
from .files import write_text
from .images import IMAGE_EXTENSIONS, list_images, load_image
from .checkpoints import is_checkpoint, load_checkpoint
from .metrics import accuracy, label_preservation, predict, translate_dataset
from .runs import load_run_checkpoint
from .names import KID_SUBSETS
from .runtime import pick_device
from .translate import load_generator, translate_folder

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # uint8 [N, 3, H, W] -> [N, D]
KID_MAX_SUBSET_SIZE = 1000
INCEPTION_RESIZE = ("none before the extractor; torch-fidelity's Inception-v3 resizes each image to 299x299 "
                    "with TensorFlow 1.x-compatible bilinear interpolation")


# --------------------------------------------------------------------------- the two distances

def fid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    r"""Fréchet distance between Gaussians fitted to two sets of features ``[N, D]`` (Heusel et al. 2017).

    .. math::
        \mathrm{FID} = \lVert\mu_1 - \mu_2\rVert^2 + \operatorname{Tr}\big(\Sigma_1 + \Sigma_2
                       - 2(\Sigma_1\Sigma_2)^{1/2}\big)

    with the sample means and covariances (denominator N - 1), in float64. The matrix square
    root is never formed. With A, B the centred features, :math:`\Sigma_1 = A^\top A/(N_1-1)` and
    :math:`\Sigma_2 = B^\top B/(N_2-1)`; the non-zero eigenvalues of :math:`A^\top A B^\top B` are
    those of :math:`(AB^\top)(AB^\top)^\top`, the squared singular values of :math:`AB^\top`, so

    .. math::
        \operatorname{Tr}(\Sigma_1\Sigma_2)^{1/2} = \lVert AB^\top\rVert_* / \sqrt{(N_1-1)(N_2-1)},

    the sum of the singular values of a matrix no larger than min(N, D) on each side (A and B
    replaced by their triangular QR factors when N > D): milliseconds for 120 images of 2048
    features.
    Singular values are real and non-negative, so there is no imaginary residue to discard
    (pytorch-fid takes the real part of ``scipy.linalg.sqrtm(S1 S2)`` after checking it is
    nearly real, torch-fidelity the real part of complex square roots of ``eigvals(S1 S2)``;
    the results agree to round-off), and the round-off of near-zero eigenvalues is not
    amplified by a square root. Equal sets give 0 up to round-off.
    """
    x, y = _features(features_1, "features_1", 2), _features(features_2, "features_2", 2)
    _same_dimension(x, y)
    a, b = x - x.mean(axis=0), y - y.mean(axis=0)
    scale_a, scale_b = len(x) - 1, len(y) - 1
    cross = _rows_at_most_columns(a) @ _rows_at_most_columns(b).T  # the singular values of A B^T
    trace_sqrt = np.linalg.svd(cross, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    mean_term = ((x.mean(axis=0) - y.mean(axis=0)) ** 2).sum()
    return float(mean_term + (a ** 2).sum() / scale_a + (b ** 2).sum() / scale_b - 2 * trace_sqrt)


def _rows_at_most_columns(a: np.ndarray) -> np.ndarray:
    """``a`` [N, D], or R of its QR factorisation when N > D: R^T R = a^T a, so products R_A R_B^T
    have the singular values of A B^T (Q has orthonormal columns)."""
    return a if len(a) <= a.shape[1] else np.linalg.qr(a, mode="r")


def kid(features_1: np.ndarray, features_2: np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    r"""Kernel Inception Distance: the mean and std of an unbiased MMD² over random subsets (Binkowski et al. 2018).

    With the cubic polynomial kernel :math:`k(x, y) = (x^\top y / D + 1)^3` and subsets
    :math:`X, Y` of m features each, drawn without replacement,

    .. math::
        \widehat{\mathrm{MMD}}^2 = \frac{1}{m(m-1)}\sum_{i \ne j}\big(k(x_i, x_j) + k(y_i, y_j)\big)
                                   - \frac{2}{m^2}\sum_{i, j} k(x_i, y_j),

    an unbiased estimate: its expectation is 0 when both sets come from one distribution, so
    it can be slightly negative, unlike FID, whose bias grows as N shrinks. ``subset_size``
    defaults to ``min(1000, N1, N2)`` so that test sets of 120-140 images can be used; when it
    equals both N the subsets are the whole sets and the std is 0 (it then says nothing about
    the sampling error). ``subsets`` = 100 as in the reference implementations; ``seed``
    fixes the draws. Returns ``(mean, std)``.
    """
    x, y = _features(features_1, "features_1", 2), _features(features_2, "features_2", 2)
    _same_dimension(x, y)
    m = default_subset_size(len(x), len(y)) if subset_size is None else subset_size
    if not 2 <= m <= min(len(x), len(y)):
        raise ValueError(f"KID subset_size must be between 2 and the smaller set's size "
                         f"({min(len(x), len(y))}), got {m}")
    if subsets < 1:
        raise ValueError(f"KID subsets must be >= 1, got {subsets}")
    rng = np.random.default_rng(seed)
    mmds = np.empty(subsets)
    for s in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        k_aa, k_bb, k_ab = _cubic_kernel(a, a), _cubic_kernel(b, b), _cubic_kernel(a, b)
        within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        mmds[s] = within - 2 * k_ab.mean()
    return float(mmds.mean()), float(mmds.std())


def default_subset_size(n1: int, n2: int) -> int:
    """KID's subset size: Binkowski et al.'s 1000, or the smaller set's size when it has fewer images."""
    return min(KID_MAX_SUBSET_SIZE, n1, n2)


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _features(array, name: str, at_least: int) -> np.ndarray:
    x = np.asarray(array, dtype=np.float64)
    if x.ndim != 2 or len(x) < at_least:
        raise ValueError(f"{name} must be an array [N, D] with N >= {at_least}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def _same_dimension(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"the two sets of features differ in dimension: {x.shape[1]} and {y.shape[1]}")


# --------------------------------------------------------------------------- features

def inception_features(device: str | torch.device | None = None) -> FeatureExtractor:
    """torch-fidelity's Inception-v3 pool3 features (2048) as a :data:`FeatureExtractor`.

    The weights are downloaded on first use and cached by torch's hub; without them and
    without internet this raises ``OSError`` saying so. ``device``: where the network runs
    (default: CUDA when present). The returned callable takes uint8 ``[N, 3, H, W]`` on any
    device and returns float64 ``[N, 2048]`` on the CPU; its ``name``, ``package`` and
    ``resize`` go into the protocol.
    """
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
    except ImportError as e:
        raise ImportError("FID and KID need the torch-fidelity package: pip install 'cyclelib[eval]'") from e
    device = pick_device(device)
    try:
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).to(device)
    except OSError as e:
        raise OSError(f"cannot get the Inception-v3 weights ({URL_INCEPTION_V3}; downloaded once, then cached "
                      f"in {Path(torch.hub.get_dir()) / 'checkpoints'}): {e}") from e

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        return network(images.to(device))[0].double().cpu()

    extract.name = "Inception-v3 pool3 (TensorFlow FID reference weights)"
    extract.package = f"torch-fidelity {version('torch-fidelity')}"
    extract.resize = INCEPTION_RESIZE
    return extract


def compute_features(batches: Iterable[torch.Tensor], extractor: FeatureExtractor) -> np.ndarray:
    """Features ``[N, D]`` (float64) of uint8 image batches ``[B, 3, H, W]``, one batch at a time."""
    out = []
    for batch in batches:
        features = torch.as_tensor(extractor(batch))
        if features.dim() != 2 or len(features) != len(batch):
            raise ValueError(f"the feature extractor must map images [N, 3, H, W] to features [N, D]; for "
                             f"{tuple(batch.shape)} it returned {tuple(features.shape)}")
        out.append(features.detach().double().cpu().numpy())
    if not out:
        raise ValueError("no images to compute features of")
    return np.concatenate(out)


def to_levels(images: torch.Tensor) -> torch.Tensor:
    """Images ``[N, C, H, W]`` in [-1, 1] (C = 1 or 3) -> uint8 ``[N, 3, H, W]``, as saving to PNG would round them."""
    levels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return levels.expand(-1, 3, -1, -1) if levels.shape[1] == 1 else levels


def folder_batches(paths: list[Path], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 batches ``[B, 3, H, W]`` of the images at ``paths``, read ``batch_size`` at a time
    (images of one size together), so memory does not grow with the folder."""
    for start in range(0, len(paths), batch_size):
        by_size: dict[tuple[int, int], list[torch.Tensor]] = {}
        for path in paths[start:start + batch_size]:
            image = torch.from_numpy(np.array(load_image(path, 3), dtype=np.uint8)).permute(2, 0, 1)
            by_size.setdefault(tuple(image.shape[1:]), []).append(image)
        yield from (torch.stack(images) for images in by_size.values())


# --------------------------------------------------------------------------- folders

def folder_images(folder: str | os.PathLike, role: str) -> list[Path]:
    """The image files of ``folder`` (recursive), checked: the folder exists and holds at least two."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"the {role} folder {folder} does not exist or is not a folder")
    paths = list_images(folder)
    if len(paths) < 2:
        raise ValueError(f"the {role} folder {folder} holds {len(paths)} image files ({' '.join(IMAGE_EXTENSIONS)}); "
                         f"FID and KID need at least 2")
    return paths


def _is_grey(paths: list[Path]) -> bool:
    """Whether every image is greyscale (read from the file headers only)."""
    def grey(path: Path) -> bool:
        try:
            with Image.open(path) as img:  # bilevel, grey, 16/32-bit grey, float grey (with or without alpha)
                return img.getbands()[0] in ("1", "L", "I", "F")
        except (OSError, SyntaxError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from e
    return all(grey(p) for p in paths)


def compare(fake: np.ndarray, real: np.ndarray, kid_subsets: int = KID_SUBSETS,
            kid_subset_size: int | None = None, seed: int = 0) -> dict:
    """FID and KID (mean, std) of two feature sets, with the KID subsets used."""
    size = default_subset_size(len(fake), len(real)) if kid_subset_size is None else kid_subset_size
    kid_mean, kid_std = kid(fake, real, kid_subsets, size, seed)
    return {"fid": fid(fake, real), "kid_mean": kid_mean, "kid_std": kid_std,
            "kid_subset_size": size, "kid_subsets": kid_subsets}


def describe(extractor: FeatureExtractor, dimension: int) -> dict:
    """The feature half of the protocol: which extractor, its package, resize and dimension."""
    return {"extractor": getattr(extractor, "name", getattr(extractor, "__qualname__", type(extractor).__name__)),
            "package": getattr(extractor, "package", None),
            "resize": getattr(extractor, "resize", "as the injected extractor does it"),
            "feature_dimension": dimension}


def evaluate_folders(fake_dir: str | os.PathLike, real_dir: str | os.PathLike,
                     extractor: FeatureExtractor | None = None, batch_size: int = 50, device: str | None = None,
                     kid_subsets: int = KID_SUBSETS, kid_subset_size: int | None = None, seed: int = 0,
                     out: str | os.PathLike | None = None, protocol: dict | None = None) -> dict:
    """FID and KID between every image below ``fake_dir`` and every image below ``real_dir``.

    Images are read as 8-bit RGB at their own size, ``batch_size`` at a time, and go to
    ``extractor`` (default: :func:`inception_features` on ``device``, built once the folders
    are checked). Errors name the folder or file:
    a missing folder, fewer than 2 images, a file that is not a readable image, and a folder
    of greyscale images compared with one of colour images (FID would mostly measure the
    colour; convert one side first). Returns the numbers with the protocol: the folders,
    image counts, the extractor (package and version, resize, feature dimension), the KID
    subsets, and ``protocol`` (e.g. split, checkpoint) merged in. With ``out``, the same
    dict is also written there as JSON, atomically.
    """
    fake_paths, real_paths = folder_images(fake_dir, "fake"), folder_images(real_dir, "real")
    fake_grey, real_grey = _is_grey(fake_paths), _is_grey(real_paths)
    if fake_grey != real_grey:
        grey, colour = (fake_dir, real_dir) if fake_grey else (real_dir, fake_dir)
        raise ValueError(f"the images in {grey} are all greyscale and those in {colour} are in colour: FID and KID "
                         f"would mostly measure the missing colour; compare folders of the same kind")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    extractor = extractor or inception_features(device)
    fake = compute_features(folder_batches(fake_paths, batch_size), extractor)
    real = compute_features(folder_batches(real_paths, batch_size), extractor)
    result = {**compare(fake, real, kid_subsets, kid_subset_size, seed),
              "fake": str(fake_dir), "real": str(real_dir), "fake_images": len(fake_paths),
              "real_images": len(real_paths), "channels": "greyscale" if fake_grey else "colour",
              **describe(extractor, fake.shape[1]), **(protocol or {})}
    if out is not None:
        write_result(result, out)
    return result


def write_result(result: dict, path: str | os.PathLike) -> Path:
    """Write ``result`` as indented JSON to ``path`` atomically (never a half-written file)."""
    return write_text(path, json.dumps(result, indent=2) + "\n")


# --------------------------------------------------------------------------- a run's translations

def evaluate_run(checkpoint: str | os.PathLike, data: str, direction: str = "AtoB", phase: str = "test",
                 extractor: FeatureExtractor | None = None, oracle: str | os.PathLike | None = None,
                 translations: str | os.PathLike | None = None, batch_size: int = 50,
                 device: str | None = None, out: str | os.PathLike | None = None, **kid_options) -> dict:
    """FID and KID of a CycleGAN run's translations of one domain against the other domain.

    ``checkpoint``: a run folder (its newest readable checkpoint) or a checkpoint file.
    ``data``: a dataset folder (``direction`` AtoB translates ``<phase>A`` into
    ``translations``, default a temporary folder, and compares them with ``<phase>B`` as
    :func:`evaluate_folders`; BtoA the other way) or a digit pair ``a:b`` (the ``phase``
    split, translated in memory, images quantised to 8 bits as a PNG would hold them). For
    digits, ``oracle`` (a CyCADA ``oracle`` stage checkpoint: a classifier trained on labelled
    target) adds its accuracy on the target images, ``oracle_accuracy``, and on the
    translations, ``label_preservation``, as CyCADA reports them: FID cannot tell whether a 3
    stayed a 3. The protocol records the checkpoint and its step, direction, data and split.
    ``batch_size`` images go through the generator and the extractor at a time. ``kid_options``:
    ``kid_subsets``, ``kid_subset_size``, ``seed`` as :func:`compare`.
    """
    if direction not in ("AtoB", "BtoA"):
        raise ValueError(f"invalid direction {direction!r}; valid values: AtoB, BtoA")
    if phase not in ("train", "test"):
        raise ValueError(f"invalid phase {phase!r}; valid values: train, test")
    path = Path(checkpoint)
    state, path = load_run_checkpoint(path) if path.is_dir() else (load_checkpoint(path), path)
    if is_labelled_pair(data) and not is_checkpoint(state, "cyclegan"):
        raise ValueError(f"{path} is not a cyclelib CycleGAN checkpoint: digit pairs are evaluated with a run's own "
                         f"checkpoint, whose config gives the image size and channels")
    step = state.get("training", {}).get("step") if is_checkpoint(state) else None
    protocol = {"checkpoint": str(path), "step": step, "direction": direction, "data": str(data), "split": phase}
    generator = load_generator(path, direction)
    source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
    if is_labelled_pair(data):
        names = dict(zip("AB", domain_pair(data)))
        config = state["config"]
        domains = {side: digit_domain(names[side], phase, config["crop_size"], config["input_nc"]) for side in "AB"}
        return _evaluate_digits(generator, domains[source], domains[target], extractor or inception_features(device),
                                oracle, batch_size, device, out, protocol, kid_options)
    if oracle is not None:
        raise ValueError("--oracle applies to digit domains (a pair such as mnist5k:mnistm5k), not to image folders")
    real_dir = Path(data) / f"{phase}{target}"
    folder_images(real_dir, "real")  # checked before the translation, not after it
    source_dir = Path(data) / f"{phase}{source}"
    with tempfile.TemporaryDirectory() as tmp:
        fake_dir = Path(translations or tmp)
        translate_folder(generator, source_dir, fake_dir, batch_size=batch_size, device=device)
        protocol["fake"] = str(translations or f"{source_dir} translated {direction}, in a deleted temporary folder")
        return evaluate_folders(fake_dir, real_dir, extractor, batch_size, device, out=out, protocol=protocol,
                                **kid_options)


def _evaluate_digits(generator: nn.Module, source: Dataset, target: Dataset, extractor: FeatureExtractor,
                     oracle: str | os.PathLike | None, batch_size: int, device: str | None,
                     out: str | os.PathLike | None, protocol: dict, kid_options: dict) -> dict:
    generator = generator.to(pick_device(device))  # translate_dataset and label_preservation use eval mode
    translated = translate_dataset(generator, source, batch_size)  # (G(x), y), on the CPU
    fake = compute_features((to_levels(x) for x, _ in DataLoader(translated, batch_size)), extractor)
    real = compute_features((to_levels(x) for x, _ in DataLoader(target, batch_size)), extractor)
    result = {**compare(fake, real, **kid_options), "fake_images": len(translated), "real_images": len(target),
              **describe(extractor, fake.shape[1]), **protocol}
    if oracle is not None:
        judge = load_oracle(oracle, generator)
        result.update(oracle=str(oracle), oracle_accuracy=accuracy(*predict(judge, target, batch_size)),
                      label_preservation=label_preservation(judge, generator, source, batch_size))
    if out is not None:
        write_result(result, out)
    return result


def load_oracle(path: str | os.PathLike, like: nn.Module) -> nn.Module:
    """The classifier of a CyCADA ``oracle`` stage checkpoint, on the device of ``like``, in eval mode."""
    state = load_checkpoint(path)
    if not is_checkpoint(state, "classifier"):
        raise ValueError(f"{path} is not a CyCADA classifier stage checkpoint (e.g. <out>/oracle/checkpoint.pt)")
    return stage_network(state, Path(path), next(like.parameters()).device)
