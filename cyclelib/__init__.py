"""cyclelib: CycleGAN and CyCADA in PyTorch, written to be read loss by loss.

Modules, one idea each, leaves first:

- ``files`` (every file written whole or not at all, damaged JSON named), ``losses`` (every
  loss with its equation), ``modes`` (``eval_mode``), ``pool`` (image history), ``metrics``, ``plots``,
  ``runtime`` (scale, device, precision, translation's precision, seeds), ``distributed`` (torchrun, the
  run context);
- ``images`` (image files and tensors), ``download``, ``digits`` (labelled digit domains),
  ``photos`` (the offline photo pair), ``data`` (unpaired folders, the order of an epoch),
  ``scenes`` (the offline segmentation pair), ``driving`` (GTA5 and Cityscapes, their downloads);
- ``networks`` (CycleGAN's generators and discriminators), ``classifiers`` (CyCADA's task
  networks and their two training steps), ``segnets`` (segmenters, the output-space
  discriminator), ``cyclegan`` (the CycleGAN model and its step);
- ``config`` (every option, scale presets), ``commands`` (the command line that builds a CyCADA config
  again), ``checkpoints`` (the one schema, verified
  files), ``runs`` (run folders and their lock), ``weights`` (official ``.pth``, safetensors,
  ``load_cyclegan``);
- ``train`` (the one training loop), ``cyclegan_run`` (a CycleGAN training run), ``cycada`` (the stages),
  ``segmentation`` (what the stages do per pixel), ``cycada_run`` (the stages in order, their evaluation),
  ``translate`` (any image size, streamed), ``testpage`` (the official test page), ``evaluate`` (FID and KID), ``export`` (a
  generator as ONNX, TorchScript, safetensors), ``bench``, ``cli``; ``names`` (every name an
  option takes, the architecture registries), ``checks`` (config checks that build networks),
  ``arguments`` (the command line's options from the configs); ``toy`` (two Gaussian mixtures,
  trained with the adversarial loss alone, for the book's "The adversarial loss");
- ``book`` (what the book reads from the package: its committed results, the time of each chapter, the
  comparison of CyCADA's forms).
"""
import importlib
import importlib.util

# Where each public name lives. They are imported on first use (PEP 562), so that `import cyclelib`
# and the command line's --help need no torch; `from cyclelib import X` works as before.
_SOURCES = {
    "book_results": "book", "chapter_time": "book", "form_comparison": "book",
    "DTN": "classifiers", "FeatureDiscriminator": "classifiers", "LeNet": "classifiers",
    "build_classifier": "classifiers",
    "CyCADAConfig": "config", "CycleGANConfig": "config", "DIGIT_DOMAINS": "names",
    "run_cycada": "cycada_run",
    "CycleGAN": "cyclegan", "GeneratorTerms": "cyclegan",
    "ImageFolderDomain": "data", "Unpaired": "data", "UnpairedImageFolder": "data",
    "open_unpaired": "data", "digit_domain": "digits", "poster_paint": "photos", "write_photo_pair": "photos",
    "CYCLEGAN_DATASETS": "download", "PRETRAINED_MODELS": "download", "download_dataset": "download",
    "download_digits": "download", "download_pretrained": "download", "RELEASE_MODELS": "download",
    "download_release_model": "download",
    "download_cyclegta5": "driving", "download_gta5": "driving",
    "evaluate_folders": "evaluate", "evaluate_run": "evaluate", "fid": "evaluate", "kid": "evaluate",
    "export_generator": "export",
    "load_checkpoint": "checkpoints", "load_safetensors": "checkpoints", "save_checkpoint": "checkpoints",
    "export_safetensors": "weights", "load_cyclegan": "weights", "load_official": "weights", "save_official": "weights",
    "load_release_segmenter": "weights",
    "cycle_loss": "losses", "discriminator_loss": "losses", "feature_gan_loss": "losses", "gan_loss": "losses",
    "gradient_penalty": "losses", "identity_loss": "losses", "mode_seeking_loss": "losses", "semantic_loss": "losses",
    "task_loss": "losses", "segmentation_loss": "losses", "segmentation_metrics": "metrics",
    "cityscapes": "driving", "gta5": "driving", "SCENE_DOMAINS": "scenes", "scene_domain": "scenes",
    "DRN26": "segnets", "FCN8s": "segnets", "ScoreDiscriminator": "segnets", "SmallFCN": "segnets",
    "build_segmenter": "segnets", "evaluate_segmentation": "segmentation", "segmentation_domain": "segmentation",
    "build_discriminator": "networks", "build_generator": "networks", "init_weights": "networks",
    "ImagePool": "pool",
    "pick_device": "runtime", "resolve_scale": "runtime", "seed_everything": "runtime",
    "lr_schedule": "cyclegan", "use_threads": "runtime",
    "translating": "runtime",
    "RunContext": "distributed", "run_context": "distributed", "eval_mode": "modes",
    "Trainable": "train", "Trainer": "train", "TrainingDiverged": "train", "TrainingInterrupted": "train",
    "train_cyclegan": "cyclegan_run",
    "load_pair": "testpage", "write_test_page": "testpage",
    "load_generator": "translate", "translate_folder": "translate", "translate_image": "tiles",
}

__version__ = "0.2.0"


def __getattr__(name: str):
    """A public name, or a module (``cyclelib.metrics`` after ``import cyclelib``, as when this
    package imported every module), imported on first use."""
    if name in _SOURCES:
        value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'cyclelib' has no attribute {name!r}")
    globals()[name] = value  # the next look-up finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})


__all__ = sorted(_SOURCES)
