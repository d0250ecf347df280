"""cyclelib: CycleGAN and CyCADA in PyTorch, written to be read loss by loss.

Modules, one idea each: ``networks`` (generators, discriminators, digit classifiers),
``losses`` (every loss with its equation), ``pool`` (image history), ``data``
(unpaired folders, digit domains, downloads), ``cyclegan`` (model and training loop),
``translate``, ``checkpoint``, ``runtime`` (scale, device, seeds), ``plots``, ``cli``.
"""
from .checkpoint import export_safetensors, load_checkpoint, load_safetensors, save_checkpoint
from .cyclegan import CycleGAN, CycleGANConfig, load_cyclegan, train_cyclegan
from .data import (CYCLEGAN_DATASETS, DIGIT_DOMAINS, ImageFolderDomain, Unpaired, UnpairedImageFolder,
                   digit_domain, download_dataset, open_unpaired)
from .losses import (cycle_loss, feature_gan_loss, gan_loss, gradient_penalty, identity_loss,
                     semantic_loss, task_loss)
from .networks import (DTN, FeatureDiscriminator, LeNet, build_classifier, build_discriminator,
                       build_generator, init_weights, load_official, save_official)
from .pool import ImagePool
from .runtime import pick_device, resolve_scale, seed_everything
from .translate import load_generator, translate_folder

__version__ = "0.1.0"
