"""cyclelib: CycleGAN and CyCADA in PyTorch, written to be read loss by loss.

Modules, one idea each, leaves first:

- ``files`` (every file written whole or not at all, damaged JSON named), ``losses`` (every
  loss with its equation), ``pool`` (image history), ``metrics``, ``plots``, ``runtime``
  (scale, device, precision, seeds), ``distributed`` (torchrun);
- ``images`` (image files and tensors), ``download``, ``digits`` (labelled digit domains),
  ``photos`` (the offline photo pair), ``data`` (unpaired folders, the order of an epoch),
  ``scenes`` (the offline segmentation pair), ``driving`` (GTA5 and Cityscapes);
- ``networks`` (CycleGAN's generators and discriminators), ``classifiers`` (CyCADA's task
  networks and their two training steps), ``segnets`` (segmenters, the output-space
  discriminator), ``cyclegan`` (the CycleGAN model and its step);
- ``config`` (every option, scale presets), ``checkpoints`` (the one schema, verified
  files), ``runs`` (run folders and their lock), ``weights`` (official ``.pth``, safetensors,
  ``load_cyclegan``);
- ``train`` (the one training loop), ``cyclegan_run`` (a CycleGAN training run), ``cycada`` (the stages),
  ``cycada_run`` (the stages in order, their evaluation), ``translate`` (any image size,
  streamed), ``testpage`` (the official test page), ``evaluate`` (FID and KID), ``export`` (a
  generator as ONNX, TorchScript, safetensors), ``bench``, ``cli``; ``toy`` (chapter 2's two Gaussian
  mixtures, trained with the adversarial loss alone).
"""
from .checkpoints import load_checkpoint, load_safetensors, save_checkpoint
from .classifiers import DTN, FeatureDiscriminator, LeNet, build_classifier
from .config import CyCADAConfig, CycleGANConfig
from .cycada_run import run_cycada
from .cyclegan import CycleGAN
from .cyclegan_run import train_cyclegan
from .data import ImageFolderDomain, Unpaired, UnpairedImageFolder, open_unpaired
from .digits import DIGIT_DOMAINS, digit_domain
from .driving import cityscapes, gta5
from .download import CYCLEGAN_DATASETS, PRETRAINED_MODELS, download_dataset, download_digits, download_pretrained
from .evaluate import evaluate_folders, evaluate_run, fid, kid
from .export import export_generator
from .losses import (cycle_loss, discriminator_loss, feature_gan_loss, gan_loss, gradient_penalty, identity_loss,
                     mode_seeking_loss, segmentation_loss, semantic_loss, task_loss)
from .metrics import segmentation_metrics
from .networks import build_discriminator, build_generator, init_weights
from .photos import poster_paint, write_photo_pair
from .pool import ImagePool
from .runtime import pick_device, resolve_scale, seed_everything
from .scenes import SCENE_DOMAINS, scene_domain
from .segnets import DRN26, FCN8s, ScoreDiscriminator, SmallFCN, build_segmenter
from .train import Trainer, TrainingDiverged, TrainingInterrupted
from .testpage import load_pair, write_test_page
from .translate import load_generator, translate_folder, translate_image
from .weights import export_safetensors, load_cyclegan, load_official, save_official

__version__ = "0.2.0"

__all__ = [
    "CYCLEGAN_DATASETS", "CyCADAConfig", "CycleGAN", "CycleGANConfig", "DIGIT_DOMAINS", "DRN26", "DTN", "FCN8s",
    "FeatureDiscriminator", "ImageFolderDomain", "ImagePool", "LeNet", "PRETRAINED_MODELS", "SCENE_DOMAINS",
    "ScoreDiscriminator", "SmallFCN", "Trainer", "TrainingDiverged", "TrainingInterrupted", "Unpaired",
    "UnpairedImageFolder", "build_classifier", "build_discriminator", "build_generator", "build_segmenter",
    "cityscapes", "cycle_loss", "digit_domain", "discriminator_loss", "download_dataset", "download_digits",
    "download_pretrained", "evaluate_folders", "evaluate_run", "export_generator", "export_safetensors",
    "feature_gan_loss", "fid", "gan_loss", "gradient_penalty", "gta5", "identity_loss", "init_weights", "kid",
    "load_checkpoint", "load_cyclegan", "load_generator", "load_official", "load_pair", "load_safetensors",
    "mode_seeking_loss", "open_unpaired", "pick_device", "poster_paint", "resolve_scale", "run_cycada",
    "save_checkpoint", "save_official", "scene_domain", "seed_everything", "segmentation_loss",
    "segmentation_metrics", "semantic_loss", "task_loss", "train_cyclegan", "translate_folder", "translate_image",
    "write_photo_pair", "write_test_page",
]
