"""cyclelib: CycleGAN and CyCADA in PyTorch, written to be read loss by loss.

Modules, one idea each, leaves first:

- ``files`` (every file written whole or not at all, damaged JSON named), ``losses`` (every
  loss with its equation), ``pool`` (image history), ``metrics``, ``plots``, ``runtime``
  (scale, device, precision, seeds), ``distributed`` (torchrun);
- ``images`` (image files and tensors), ``download``, ``data`` (unpaired folders, digit
  domains, the order of an epoch);
- ``networks`` (CycleGAN's generators and discriminators), ``classifiers`` (CyCADA's task
  networks and their two training steps), ``cyclegan`` (the CycleGAN model and its step);
- ``config`` (every option, scale presets), ``io`` (checkpoints, safetensors, official
  weights, run folders);
- ``train`` (the one training loop, and the CycleGAN run), ``cycada`` (the stages and their
  evaluation), ``translate`` (any image size, streamed), ``testpage`` (the official test page),
  ``evaluate`` (FID and KID), ``export`` (a generator as ONNX, TorchScript, safetensors), ``bench``,
  ``cli``;
- ``book`` (what the book reads from the package: its committed results, the time of each chapter).
"""
from .book import book_results, chapter_time
from .classifiers import DTN, FeatureDiscriminator, LeNet, build_classifier
from .config import CyCADAConfig, CycleGANConfig
from .cycada import run_cycada
from .cyclegan import CycleGAN
from .data import (DIGIT_DOMAINS, ImageFolderDomain, Unpaired, UnpairedImageFolder, digit_domain, open_unpaired,
                   poster_paint, write_photo_pair)
from .download import CYCLEGAN_DATASETS, PRETRAINED_MODELS, download_dataset, download_digits, download_pretrained
from .evaluate import evaluate_folders, evaluate_run, fid, kid
from .export import export_generator
from .io import (export_safetensors, load_checkpoint, load_cyclegan, load_official, load_safetensors,
                 save_checkpoint, save_official)
from .losses import (cycle_loss, discriminator_loss, feature_gan_loss, gan_loss, gradient_penalty, identity_loss,
                     mode_seeking_loss, semantic_loss, task_loss)
from .networks import build_discriminator, build_generator, init_weights
from .pool import ImagePool
from .runtime import pick_device, resolve_scale, seed_everything
from .train import Trainer, TrainingDiverged, TrainingInterrupted, train_cyclegan
from .testpage import load_pair, write_test_page
from .translate import load_generator, translate_folder, translate_image

__version__ = "0.2.0"

__all__ = [
    "CYCLEGAN_DATASETS", "CyCADAConfig", "CycleGAN", "CycleGANConfig", "DIGIT_DOMAINS", "DTN",
    "FeatureDiscriminator", "ImageFolderDomain", "ImagePool", "LeNet", "PRETRAINED_MODELS", "Trainer",
    "TrainingDiverged", "TrainingInterrupted", "Unpaired", "UnpairedImageFolder", "book_results", "build_classifier",
    "build_discriminator", "build_generator", "chapter_time", "cycle_loss", "digit_domain", "discriminator_loss",
    "download_dataset", "download_digits", "download_pretrained", "evaluate_folders", "evaluate_run",
    "export_generator", "export_safetensors", "feature_gan_loss", "fid", "gan_loss", "gradient_penalty",
    "identity_loss", "init_weights", "kid", "load_checkpoint", "load_cyclegan", "load_generator", "load_official",
    "load_pair", "load_safetensors", "mode_seeking_loss", "open_unpaired", "pick_device", "poster_paint",
    "resolve_scale", "run_cycada", "save_checkpoint", "save_official", "seed_everything", "semantic_loss",
    "task_loss", "train_cyclegan", "translate_folder", "translate_image", "write_photo_pair", "write_test_page",
]
