"""Downloads: the official CycleGAN data sets and pretrained generators, the digit benchmarks, the CyCADA
release's segmenters, and where they live.

Every download of ours streams into ``<file>.part``, renamed once complete (and its MD5 or
SHA-256 checked where one is known); an interrupted one keeps its bytes there and the next
call resumes with an HTTP Range request. Archives are unpacked into a temporary folder renamed
into place, so an interrupted download never leaves something that looks finished; a failed
one leaves no folder it created empty. A download that fails (no connection, HTTP error,
corrupt or incomplete file) raises :class:`DownloadError` naming the URL and the reason.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple
from urllib.error import HTTPError, URLError

try:
    import fcntl
except ImportError:  # Windows: no flock, so concurrent downloads of one file are not refused there
    fcntl = None

try:
    from tqdm import tqdm
except ImportError:  # a progress bar is a nicety, not a requirement
    tqdm = None

CYCLEGAN_DATASETS = (
    "apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
    "ukiyoe2photo", "vangogh2photo", "maps", "facades", "iphone2dslr_flower", "ae_photos", "mini",
)
CYCLEGAN_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip"
# Cityscapes is in the official list but not on the server: its licence allows no redistribution.
# The official datasets/download_pix2pix_dataset.sh (lines 8-12; download_cyclegan_dataset.sh has the
# same lines) prints these manual steps and exits 1; the official datasets/prepare_cityscapes_dataset.py
# writes trainA (photos), trainB (label colour maps) and testA/testB (the val split) at 256x256. The two
# zips unzipped into one folder are also what cyclelib.driving.cityscapes reads (leftImg8bit/, gtFine/).
CITYSCAPES_STEPS = (
    "cityscapes is not downloaded automatically: its licence does not allow redistribution. Register at "
    "https://www.cityscapes-dataset.com and download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip. "
    "For segmentation (cyclelib train cycada --task segmentation --target cityscapes:DIR): unzip both into one "
    "folder DIR, which then holds leftImg8bit/ and gtFine/. For the CycleGAN pair (photos <-> label colour maps, "
    "--data datasets/cityscapes): run the official CycleGAN repository's datasets/prepare_cityscapes_dataset.py "
    "--gtFine_dir DIR/gtFine --leftImg8bit_dir DIR/leftImg8bit --output_dir datasets/cityscapes (it writes "
    "trainA, trainB, testA, testB)")
DIGIT_SPLITS = ("train", "test")

# Ganin's "unpacked version of MNIST-M" (mnist_m.tar.gz: mnist_m/mnist_m_{train,test}/*.png
# and mnist_m/mnist_m_{train,test}_labels.txt with lines "00000000.png 5"). The author's
# copy sits on Google Drive, which urllib cannot fetch; this mirror (used by pytorch-adapt)
# serves the same file, checked against its MD5.
MNISTM_URL = "https://cornell.box.com/shared/static/jado7quprg6hzzdubvwzh9umr75damwi"
MNISTM_MD5 = "859df31c91afe82e80e5012ba928f279"


class DownloadError(RuntimeError):
    """A download failed: no connection, an HTTP error, or a corrupt or incomplete file."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where digit benchmarks live: `root`, else ``$CYCLELIB_DATA``, else ``~/.cache/cyclelib``."""
    return Path(root or os.environ.get("CYCLELIB_DATA") or "~/.cache/cyclelib").expanduser()


_MNIST_FILES = tuple(f"MNIST/raw/{prefix}-{kind}" for prefix in ("train", "t10k")
                     for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
# Files each downloadable domain needs, per split, relative to the data root. torchvision's
# MNIST insists on all four files whatever the split.
DIGIT_FILES = {
    "mnist": {"train": _MNIST_FILES, "test": _MNIST_FILES},
    "usps": {"train": ("usps/usps.bz2",), "test": ("usps/usps.t.bz2",)},
    "svhn": {"train": ("svhn/train_32x32.mat",), "test": ("svhn/test_32x32.mat",)},
    "mnistm": {"train": ("mnist_m/mnist_m_train_labels.txt",), "test": ("mnist_m/mnist_m_test_labels.txt",)},
}


def download_digits(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download a digit benchmark (``mnist``, ``usps``, ``svhn``, ``mnistm``) into
    :func:`data_root`, both splits; files already there are kept. Returns the root. A failure
    raises :class:`DownloadError` naming the URL and the reason."""
    if name not in DIGIT_FILES:
        raise ValueError(f"{name!r} is not a downloadable digit domain; valid values: {', '.join(DIGIT_FILES)}")
    root = data_root(root)
    if name == "mnistm":
        if not (root / "mnist_m").is_dir():
            _download_and_unpack(MNISTM_URL, root / "mnist_m", md5=MNISTM_MD5)
        return root
    files = _torchvision_files(name, root)
    with removed_if_left_empty({path.parent for _, path, _ in files}):
        _download_torchvision(name, root, files)
    return root


def _download_torchvision(name: str, root: Path, files: list[tuple[str, Path, str]]) -> None:
    from torchvision import datasets  # their download code knows the mirrors and checksums

    if name == "usps":
        _discard_corrupt(files)  # torchvision's USPS keeps any file already there, even a truncated one
    try:
        if name == "mnist":
            datasets.MNIST(root, download=True)  # fetches both splits
        elif name == "usps":
            for train in (True, False):
                datasets.USPS(root / "usps", train=train, download=True)
        else:
            for split in DIGIT_SPLITS:
                datasets.SVHN(root / "svhn", split=split, download=True)
    except BaseException as err:
        # torchvision writes straight to the final file name and keeps a file that fails its MD5:
        # delete it, or digit_domain would take it for a finished download.
        corrupt = _discard_corrupt(files)
        if not isinstance(err, (OSError, RuntimeError, EOFError)):
            raise  # KeyboardInterrupt and the like, after the cleanup
        reason = "; ".join(f"{path.name} from {url} failed its MD5 check (corrupt or incomplete download, or the "
                           f"file changed on the server); it was deleted, download again to retry"
                           for url, path in corrupt)
        if not reason:  # files come in torchvision's order: the first one missing is the one that failed
            url = next((url for url, path, _ in files if not path.is_file()), None)
            reason = f"{url}: {_reason(err)}" if url else _reason(err)
        raise DownloadError(f"could not download digit domain {name!r} into {root}: {reason}") from err


def _reason(err: BaseException) -> str:
    """An error's text on one line, without URLError's "<urlopen error ...>" wrapping (HTTPError's
    "HTTP Error 404: Not Found" is kept whole)."""
    return " ".join(str(err.reason if type(err) is URLError else err).split())


@contextlib.contextmanager
def removed_if_left_empty(folders):
    """On an error in the block, remove each of ``folders`` (and their parents) that did not exist
    before and is empty after: a failed download leaves no empty folder behind."""
    new = {p for folder in folders for p in (folder, *folder.parents) if not p.exists()}
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda p: len(p.parts), reverse=True):  # children first
            with contextlib.suppress(OSError):  # not empty (another file landed there), or gone
                folder.rmdir()
        raise


def _torchvision_files(name: str, root: Path) -> list[tuple[str, Path, str]]:
    """``(url, path, md5)`` of each file torchvision downloads for digit domain `name`, read from
    its dataset classes (for MNIST, the first mirror's URL and the ``.gz`` it keeps)."""
    from torchvision import datasets

    if name == "mnist":
        return [(datasets.MNIST.mirrors[0] + file, root / "MNIST" / "raw" / file, md5)
                for file, md5 in datasets.MNIST.resources]
    split_list = (datasets.USPS if name == "usps" else datasets.SVHN).split_list
    return [(url, root / name / file, md5) for split, (url, file, md5) in split_list.items() if split in DIGIT_SPLITS]


def _discard_corrupt(files) -> list[tuple[str, Path]]:
    """Delete each present file of ``(url, path, md5)`` whose MD5 is wrong; returns their ``(url, path)``."""
    corrupt = []
    for url, path, md5 in files:
        if path.is_file() and _md5_of(path) != md5:
            path.unlink()
            corrupt.append((url, path))
    return corrupt


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path, algorithm: str = "md5", expected: str | None = None) -> str:
    """Stream `url` to `dest` through ``dest.part``, renamed once complete: `dest` is whole or absent.

    Resumable: the bytes an interrupted transfer left in ``dest.part`` are kept, and the next call
    asks for the rest with an HTTP Range request; a server that answers with the whole file instead
    (no Range support, or a ``file://`` URL) starts it over. The file's digest under `algorithm` is
    checked against `expected` when given (a mismatch deletes the file) and returned. A second
    process fetching the same `dest` meanwhile is refused (where the OS has ``flock``), as its bytes
    would interleave with these.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with _open_part(partial) as out:
            if fcntl is not None:
                try:
                    fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise DownloadError(f"could not download {url}: another process is downloading it into "
                                        f"{partial}; wait for it to finish") from None
            try:
                digest = _transfer(url, out, algorithm, partial)
                if expected is not None and digest != expected:
                    out.truncate(0)  # removed below
                    raise DownloadError(f"{url} gave a file with {algorithm.upper()} {digest}, expected {expected} "
                                        f"(corrupt download, or the file changed); it was deleted")
                os.replace(partial, dest)
            finally:
                if not os.fstat(out.fileno()).st_size:
                    partial.unlink(missing_ok=True)  # nothing to resume from
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
        resume = f"; run it again to resume from {partial}" if partial.is_file() and not partial.is_symlink() else ""
        raise DownloadError(f"could not download {url}: {_reason(err)}{resume}") from err
    return digest


def _open_part(partial: Path):
    """``partial`` opened to append and read, never through a link at its path, with the umask's
    permissions; opening never truncates what another process may be writing."""
    try:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:  # ELOOP: a symbolic link, under O_NOFOLLOW
            raise
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd is not None:
            os.close(fd)
        raise OSError(f"{partial} is not a regular file (a link, a FIFO or a folder); remove it")
    return os.fdopen(fd, "a+b")


def _transfer(url: str, out: BinaryIO, algorithm: str, partial: Path) -> str:
    """Append the rest of `url` to `out`, the open file `partial` (from its end: a Range request), or
    all of it where the server sends the whole file; returns the digest of the whole file."""
    offset = out.seek(0, os.SEEK_END)
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {}), timeout=60)
    except HTTPError as err:
        if err.code != 416 or not offset:
            raise
        out.truncate(0)  # 416: the part is no prefix of the file (it changed on the server): start over
        return _transfer(url, out, algorithm, partial)
    digest, bar = hashlib.new(algorithm, usedforsecurity=False), None
    with response:
        if getattr(response, "status", None) != 206:  # the whole file came back
            out.truncate(0)
            offset = 0
        out.seek(0)
        while offset and (chunk := out.read(1 << 20)):  # the part already there, then the rest
            digest.update(chunk)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        if tqdm is not None:
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=partial.stem, leave=False)
        try:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    out.flush()
    if total is not None and out.tell() != total:
        raise DownloadError(f"download of {url} stopped after {out.tell()} of {total} bytes; "
                            f"run it again to resume from {partial}")
    return digest.hexdigest()


def _check_member_names(names, source: str) -> None:
    """Refuse archive members that would land outside the extraction folder ("zip slip")."""
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"refusing to extract {source}: member {name!r} points outside the target folder")


def unpack(archive: Path, dest: Path, source: str) -> None:
    """Extract a zip or tar archive so that `dest` appears complete, in one rename.

    Official archives hold one top folder named like `dest` (horse2zebra.zip ->
    horse2zebra/trainA/...); an archive without it is taken as the content itself.
    """
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    unpacked = work / "unpacked"  # not mkdtemp's private 0700 folder: one with the umask's permissions
    try:
        unpacked.mkdir()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                try:
                    broken = zipped.testzip()  # reads every member and checks its CRC
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
                    raise DownloadError(f"corrupt zip from {source} ({err}); download it again") from err
                if broken is not None:
                    raise DownloadError(f"corrupt zip from {source}: member {broken} is damaged; download it again")
                _check_member_names(zipped.namelist(), source)
                zipped.extractall(unpacked)
        elif tarfile.is_tarfile(archive):
            try:
                with tarfile.open(archive) as tar:
                    _check_member_names(tar.getnames(), source)
                    tar.extractall(unpacked, filter="data")  # also refuses links and devices escaping it
            except tarfile.FilterError as err:
                raise ValueError(f"refusing to extract {source}: member {err.tarinfo.name!r}: {err}") from err
            except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error) as err:
                raise DownloadError(f"corrupt tar archive from {source} ({err}); download it again") from err
        else:
            raise DownloadError(f"{source} did not give a zip or tar archive (corrupt or incomplete download)")
        content = unpacked / dest.name if (unpacked / dest.name).is_dir() else unpacked
        os.replace(content, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download_and_unpack(url: str, dest: Path, md5: str | None = None) -> Path:
    with removed_if_left_empty([dest.parent]):
        archive = dest.parent / f"{dest.name}.archive"
        fetch(url, archive, "md5", md5)
        try:
            unpack(archive, dest, url)
        finally:
            archive.unlink(missing_ok=True)  # the extracted folder is what is kept
    return dest


def download_dataset(name: str, root: str | os.PathLike, url: str | None = None) -> Path:
    """Download and extract an official CycleGAN dataset; returns ``root/name``.

    ``url`` overrides the official location (a mirror, or a ``file://`` URL). A dataset
    already extracted is not downloaded again. Network failures and corrupt archives
    raise :class:`DownloadError` (a RuntimeError) naming the URL; unsafe archive members raise
    ValueError naming the member. ``cityscapes`` raises :class:`DownloadError` with the manual
    steps its licence requires (:data:`CITYSCAPES_STEPS`), without touching the network.
    """
    if name not in (*CYCLEGAN_DATASETS, "cityscapes"):
        raise ValueError(f"unknown CycleGAN dataset {name!r}; valid values: {', '.join(CYCLEGAN_DATASETS)}, cityscapes")
    dest = Path(root).expanduser() / name
    if dest.is_dir():
        return dest
    if name == "cityscapes":
        raise DownloadError(CITYSCAPES_STEPS)
    return _download_and_unpack(url or CYCLEGAN_URL.format(name=name), dest)


# --------------------------------------------------------------------------- pretrained CycleGAN generators

# The names of line 3 of the official scripts/download_cyclegan_model.sh, in its order, and the URL of
# its line 9 (see download_pretrained). Each is the generator of one direction: ResNet-9, instance
# norm, no dropout (the official README's test command passes --no_dropout).
PRETRAINED_MODELS = (
    "apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite", "horse2zebra",
    "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh", "sat2map",
    "map2sat", "cityscapes_photo2label", "cityscapes_label2photo", "facades_photo2label", "facades_label2photo",
    "iphone2dslr_flower",
)
PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"
# SHA-256 and size in bytes of each file, recorded from a first download (download_pretrained prints
# both for a model not yet here). The official pages state neither; until a model is recorded, its
# download is unverified and its size unknown.
PRETRAINED_SHA256: dict[str, str] = {}
PRETRAINED_SIZES: dict[str, int] = {}


def models_root(root: str | os.PathLike | None = None) -> Path:
    """Where pretrained models live: `root`, else ``$CYCLELIB_CACHE``, else ``~/.cache/cyclelib/models``."""
    return Path(root or os.environ.get("CYCLELIB_CACHE") or "~/.cache/cyclelib/models").expanduser()


def download_pretrained(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download an official pretrained CycleGAN generator; returns its path,
    ``<root>/<name>_pretrained/latest_net_G.pth`` (the official layout, so the official ``test.py
    --checkpoints_dir <root> --name <name>_pretrained`` finds it too), root as :func:`models_root`.

    Names, URL and file name are those of the official ``scripts/download_cyclegan_model.sh`` of
    junyanz/pytorch-CycleGAN-and-pix2pix: line 3 lists the 18 names (the official README links
    that line as "all the available CycleGAN models"), line 8 saves
    ``./checkpoints/${FILE}_pretrained/latest_net_G.pth`` from line 9's
    ``http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/$FILE.pth``.

    A file already there is returned as it is. A download resumes where an interrupted one
    stopped and appears at its path only once complete. With a SHA-256 recorded in
    :data:`PRETRAINED_SHA256`, a file that does not match is deleted and a :class:`DownloadError`
    raised; without one, a note on stderr says the file is unverified and gives its SHA-256 and
    size to record. Failures raise :class:`DownloadError` naming the URL and the reason, and leave
    no folder behind that they created empty (a partial ``.part`` file is kept to resume from).
    """
    if name not in PRETRAINED_MODELS:
        raise ValueError(f"unknown pretrained model {name!r}; valid values: {', '.join(PRETRAINED_MODELS)}")
    path = models_root(root) / f"{name}_pretrained" / "latest_net_G.pth"
    return _download_model(name, PRETRAINED_URL.format(name=name), path, PRETRAINED_SHA256)


def _download_model(name: str, url: str, path: Path, recorded: dict[str, str]) -> Path:
    """``path``, downloaded from ``url`` unless it is there, checked against the SHA-256 of ``name`` in
    ``recorded`` where there is one, else with a note on stderr giving the SHA-256 and size to record."""
    if path.is_file():
        return path
    with removed_if_left_empty([path.parent]):
        sha256 = fetch(url, path, "sha256", recorded.get(name))
    if name not in recorded:
        print(f"note: {name} is unverified (no SHA-256 recorded in cyclelib); it has SHA-256 {sha256} and "
              f"{path.stat().st_size} bytes", file=sys.stderr)
    return path


# --------------------------------------------------------------------------- the CyCADA release's segmenters

# The DRN-26 segmenters the CyCADA release publishes (jhoffman/cycada_release README.md lines 43-44 and 47), by
# name: the CyCADA stage each one is (CyCADAConfig.stage_weights) and its Dropbox link with ?dl=1 (the README's
# ?dl=0 gives Dropbox's page, ?dl=1 the file). Trained on GTA5 (f_S), on GTA5 translated to look like Cityscapes
# (pixel_only: scripts/train_fcn_adda.sh lines 26 and 33-40 start the feature stage from it) and the final CyCADA
# model GTA5 -> Cityscapes (feature).
class ReleaseModel(NamedTuple):
    stage: str  # the CyCADA stage it is
    what: str
    url: str


_DROPBOX = "https://www.dropbox.com/s/"
RELEASE_MODELS = {
    "drn26-gta5": ReleaseModel("source", "trained on GTA5",
                               _DROPBOX + "6l073jpt6eo8t8n/drn26-gta5-iter115000.pth?dl=1"),
    "drn26-cyclegta5": ReleaseModel("pixel_only", "trained on GTA5 translated to look like Cityscapes",
                                    _DROPBOX + "5hwuq1gy55f6q2b/drn26-cyclegta5-iter115000.pth?dl=1"),
    "drn26-cycada": ReleaseModel("feature", "the final CyCADA model, GTA5 -> Cityscapes",
                                 _DROPBOX + "dgt00nt6oymbt4k/drn26_cycada_cyclegta2cityscapes.pth?dl=1"),
}
# SHA-256 of each file, recorded from a first download as for PRETRAINED_SHA256 (the release states none).
RELEASE_SHA256: dict[str, str] = {}


def download_release_model(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download a segmenter the CyCADA release publishes (:data:`RELEASE_MODELS`) into
    ``<root>/cycada_release/`` under the release's file name (e.g. ``drn26-gta5-iter115000.pth``), root
    as :func:`models_root`; returns its path. Downloaded, verified and noted as :func:`download_pretrained`."""
    if name not in RELEASE_MODELS:
        raise ValueError(f"unknown CyCADA release model {name!r}; valid values: {', '.join(RELEASE_MODELS)}")
    url = RELEASE_MODELS[name].url
    path = models_root(root) / "cycada_release" / PurePosixPath(urllib.parse.urlsplit(url).path).name
    return _download_model(name, url, path, RELEASE_SHA256)
