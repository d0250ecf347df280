"""cyclelib: CycleGAN and CyCADA in PyTorch, written to be read loss by loss.

Modules, one idea each, leaves first:

- ``losses`` (every loss with its equation), ``pool`` (image history), ``metrics``,
  ``plots``, ``runtime`` (scale, device, precision, seeds), ``distributed`` (torchrun);
- ``data`` (image files, unpaired folders, digit domains, the epoch order, downloads);
- ``networks`` (CycleGAN's generators and discriminators), ``classifiers`` (CyCADA's task
  networks and their two training steps), ``cyclegan`` (the CycleGAN model and its step);
- ``config`` (every option, scale presets), ``io`` (every file: checkpoints, safetensors,
  official weights, run folders);
- ``train`` (the one training loop, and the CycleGAN run), ``cycada`` (the stages and their
  evaluation), ``translate``, ``bench``, ``cli``.
"""
from .classifiers import DTN, FeatureDiscriminator, LeNet, build_classifier
from .config import CyCADAConfig, CycleGANConfig
from .cycada import run_cycada
from .cyclegan import CycleGAN
from .data import (CYCLEGAN_DATASETS, DIGIT_DOMAINS, ImageFolderDomain, Unpaired, UnpairedImageFolder,
                   digit_domain, download_dataset, open_unpaired)
from .io import (export_safetensors, load_checkpoint, load_cyclegan, load_official, load_safetensors,
                 save_checkpoint, save_official)
from .losses import (cycle_loss, discriminator_loss, feature_gan_loss, gan_loss, gradient_penalty, identity_loss,
                     semantic_loss, task_loss)
from .networks import build_discriminator, build_generator, init_weights
from .pool import ImagePool
from .runtime import pick_device, resolve_scale, seed_everything
from .train import Trainer, TrainingDiverged, TrainingInterrupted, train_cyclegan
from .translate import load_generator, translate_folder

__version__ = "0.2.0"
