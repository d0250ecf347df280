"""The scale presets: per scale (smoke / cpu / colab / gpu, see
:func:`~cyclelib.runtime.resolve_scale`), the options of a CycleGAN or CyCADA run that differ from
the papers' defaults. :meth:`CycleGANConfig.for_scale` and :meth:`CyCADAConfig.for_scale` apply
them; options given explicitly win over them. No torch: the command line shows them in its help."""
from __future__ import annotations

from .names import is_driving_domain, is_labelled_pair


def cyclegan_preset(scale: str | None, data: str) -> dict:
    """The options that scale ``scale`` (see :func:`resolve_scale`) sets for a CycleGAN on ``data``."""
    from .runtime import resolve_scale  # asks torch for CUDA when no scale is given
    return CYCLEGAN_PRESETS[resolve_scale(scale)]["digits" if is_labelled_pair(data) else "images"]


# Per scale and kind of data, the options that differ from the paper's defaults.
# Digits are 32x32 and need no augmentation (a flipped "2" is no digit).
_DIGITS = dict(load_size=32, crop_size=32, preprocess="none", flip=False)
CYCLEGAN_PRESETS = {
    "smoke": {
        "digits": dict(_DIGITS, netG="resnet_2blocks", ngf=8, ndf=8, batch_size=4, n_epochs=1,
                       n_epochs_decay=1, max_dataset_size=16, num_workers=0, log_every=1,
                       sample_every=4, checkpoint_every=4),
        "images": dict(netG="resnet_2blocks", ngf=8, ndf=8, batch_size=2, n_epochs=1, n_epochs_decay=1,
                       max_dataset_size=8, load_size=36, crop_size=32, num_workers=0, log_every=1,
                       sample_every=4, checkpoint_every=4),
    },
    "cpu": {
        "digits": dict(_DIGITS, netG="resnet_6blocks", ngf=32, ndf=32, batch_size=8, n_epochs=3,
                       n_epochs_decay=2, max_dataset_size=800, log_every=10, sample_every=100,
                       checkpoint_every=100),
        "images": dict(netG="resnet_6blocks", ngf=32, ndf=32, load_size=143, crop_size=128,
                       n_epochs=2, n_epochs_decay=1, max_dataset_size=200, log_every=10,
                       sample_every=100, checkpoint_every=200),
    },
    # a book chapter within about 30 minutes on a free Colab T4 (benchmarks/estimate_gpu_time.py):
    # the paper's networks at half width on digits, a tenth of the paper's epochs on photos
    "colab": {
        "digits": dict(_DIGITS, ngf=32, ndf=32, batch_size=50, n_epochs=10, n_epochs_decay=10, num_workers=2,
                       log_every=20, sample_every=400, checkpoint_every=400),
        "images": dict(n_epochs=10, n_epochs_decay=10, max_dataset_size=400, num_workers=2, log_every=50,
                       sample_every=1000, checkpoint_every=1000),
    },
    "gpu": {
        "digits": dict(_DIGITS, batch_size=100, n_epochs=20, n_epochs_decay=20, num_workers=4,
                       log_every=50, sample_every=500, checkpoint_every=2000),
        "images": dict(num_workers=4),
    },
}


# Per scale, the CyCADA options that differ from the paper's defaults.
CYCADA_PRESETS = {
    # seconds: every stage runs a few steps on a few images (CI, nbval)
    "smoke": dict(image_size=16, max_samples=24, max_eval_samples=48, task_batch_size=8, task_epochs=1,
                  netG="resnet_1blocks", ngf=4, netD="n_layers", n_layers_D=2, ndf=4,  # basic D needs >= 32 px
                  pixel_batch_size=8, pixel_epochs=1, pixel_epochs_decay=0, pool_size=8, feature_batch_size=8,
                  feature_epochs=1, log_every=1, sample_every=1000, checkpoint_every=1000),
    # every stage in 7 (uci-digits -> mnist5k) to 17 (mnist5k -> mnistm5k) minutes on one thread of an AMD
    # EPYC (README, "CyCADA at the cpu scale"): fewer images and epochs than the paper's, so the feature
    # stage takes a larger learning rate than the release's 1e-5
    "cpu": dict(netG="resnet_3blocks", ngf=16, ndf=16, max_samples=2000, task_lr=1e-3, task_batch_size=64,
                task_epochs=5, pixel_batch_size=16, pixel_epochs=3, pixel_epochs_decay=2, feature_lr=3e-4,
                feature_batch_size=64, feature_epochs=20, log_every=10, sample_every=200, checkpoint_every=200),
    # each book chapter within about 30 minutes on a free Colab T4 (benchmarks/estimate_gpu_time.py),
    # on the offline 5k digit sets: the paper's networks at half width, the cpu scale's learning rates
    "colab": dict(ngf=32, ndf=32, task_lr=1e-3, task_batch_size=64, task_epochs=10, pixel_batch_size=50,
                  pixel_epochs=10, pixel_epochs_decay=10, feature_lr=3e-4, feature_batch_size=64, feature_epochs=20,
                  num_workers=2, log_every=20, sample_every=400, checkpoint_every=400),
    # the paper's setting
    "gpu": dict(num_workers=4),
}

# Per scale and kind of segmentation pair, the options of a segmentation run (task segmentation) that differ from
# those of CYCADA_PRESETS: "scenes", the offline digit scenes, and "driving", gta5:PATH -> cityscapes:PATH.
_SMOKE_SEGMENTATION = dict(image_size=32, max_samples=16, max_eval_samples=16, task_batch_size=4, pixel_batch_size=4,
                           feature_batch_size=4, d_feat_width=16)  # seconds: 32x32 scenes, every stage a few steps
# the digit scenes (64x64, 2,000 train and 500 test per domain) in about ten minutes on one thread: the small FCN
# as benchmarks/segmentation_gap.py trains it, a short CycleGAN and two epochs of each feature stage with a
# narrow score discriminator (the release's 512 channels cost about 100 ms per scene on one thread)
_CPU_SEGMENTATION = dict(image_size=64, task_lr=1e-3, task_batch_size=16, task_epochs=5, netG="resnet_3blocks",
                         ngf=8, ndf=16, pixel_batch_size=8, pixel_epochs=1, pixel_epochs_decay=1, feature_lr=1e-4,
                         feature_batch_size=16, feature_epochs=2, d_feat_width=64, log_every=20, sample_every=500,
                         checkpoint_every=200)
SEGMENTATION_PRESETS = {
    "smoke": {"scenes": _SMOKE_SEGMENTATION, "driving": _SMOKE_SEGMENTATION},
    "cpu": {"scenes": _CPU_SEGMENTATION, "driving": _CPU_SEGMENTATION},
    # GTA5 -> Cityscapes as the release trains it (jhoffman/cycada_release at commit 2fbf16b): DRN-26
    # (scripts/train_fcn_adda.sh line 34) starting from its ImageNet weights (scripts/train_fcn.py line 76,
    # get_model(..., finetune=True); cycada/models/drn.py lines 161-171) on scenes at a shorter side of 1024
    # (scripts/train_fcn.py lines 85-92, cycada/data/data_loader.py lines 38 and 56-57); the source model with
    # SGD at 1e-3, momentum 0.99, batch 2 for 100,000 iterations (scripts/train_fcn.sh lines 9-12: 8 epochs of
    # GTA5's 24,966 scenes; weight decay 5e-4, scripts/train_fcn.py lines 103-104); the adaptation with SGD at
    # 1e-5, momentum 0.99, batch 1 and random 768 crops for 100,000 iterations (scripts/train_fcn_adda.sh lines
    # 7-8, 15-16 and 18: 4 epochs of 24,966 pairs; cycada/data/adda_datasets.py lines 62-64), lambda_g 0.1
    # (line 10) as lambda_feature (lambda_d 1, line 9, is D_feat's loss as it is), f_T stepping only while the
    # discriminator's domain accuracy is above 60% (scripts/train_fcn_adda.py lines 265-267, its mean over the
    # last 100 iterations, as here); discrim_score and weights_shared (train_fcn_adda.sh lines 20-21)
    # are segmentation's feature game (segmentation.feature_game). How the release trained its GTA5 ->
    # Cityscapes CycleGAN it does not say: its CycleGAN submodule (jhoffman/pytorch-CycleGAN-and-pix2pix at
    # e484612) holds a training script for digits only (train_cycada.sh); it publishes the translated frames
    # instead (cyclelib download cyclegta5). The pixel stage here takes one pair a step, CycleGAN's batch, on
    # random, flipped crops of 400 pixels (pixel_crop_size) of scenes read at a shorter side of image_size: our
    # choice, which keeps a CycleGAN step near the cost of a segmenter's (benchmarks/estimate_gpu_time.py);
    # CycleGAN scripts for GTA5 -> Cityscapes that circulate in public code crop 400 of scenes scaled to 1024
    # wide, but none is in the release, so it is no citation.
    # Departures: the classifier stages train on the random, flipped crops too, where the release's source
    # model reads whole scenes (train_fcn.sh passes --crop_size 768 without --augmentation, train_fcn.py lines
    # 59 and 106-109).
    "gpu": {"scenes": {}, "driving": dict(
        classifier="drn26_imagenet", image_size=1024, crop_size=768, task_optimizer="sgd", task_lr=1e-3,
        task_batch_size=2, task_epochs=8, pixel_batch_size=1, pixel_crop_size=400, feature_optimizer="sgd",
        feature_lr=1e-5, feature_batch_size=1, feature_epochs=4, lambda_feature=0.1, feature_gate=0.6)},
}


def segmentation_kind(source: str | None) -> str:
    """The kind of segmentation pair whose source is ``source``: "driving" (gta5:PATH, cityscapes:PATH) or
    "scenes" (the digit scenes, and a source not known yet)."""
    return "driving" if source is not None and is_driving_domain(source) else "scenes"


def cycada_preset(scale: str, task: str | None = None, source: str | None = None) -> dict:
    """The options that scale ``scale`` sets for a CyCADA run of ``task`` (None: classification) from domain
    ``source`` (segmentation: the digit scenes' or the driving scenes' preset, :func:`segmentation_kind`)."""
    segmentation = SEGMENTATION_PRESETS.get(scale, {}).get(segmentation_kind(source), {})
    return {**CYCADA_PRESETS[scale], **(segmentation if task == "segmentation" else {})}


def cycada_presets_by_kind() -> dict[str, dict[str, dict]]:
    """Per scale, the options each kind of CyCADA run takes from it (digits, and the two kinds of segmentation
    pair), as the command line's help shows them."""
    return {scale: {"digits": cycada_preset(scale), "digit scenes": cycada_preset(scale, "segmentation"),
                    "driving scenes": cycada_preset(scale, "segmentation", "gta5:PATH")} for scale in CYCADA_PRESETS}


# CyCADA's forms (train cycada --form, CyCADAConfig.for_scale(form=...)), per task: the paper's is the options'
# defaults; the release's is its choices where it departs from the paper (jhoffman/cycada_release at commit
# 2fbf16b; each option's help says which, its field in config.py cites file and line). A scale's learning rates
# stay the scale's. For segmentation the release's stage 3 is scripts/train_fcn_adda.sh: f_T starts from the
# network trained on translated GTA5 (lines 33-40, --weights_init drn26-cyclegta5), steps only while D's mean
# accuracy is above 60% (train_fcn_adda.py lines 265-267) and, its weights shared (line 20), steps on the source
# labels too (train_fcn_adda.py lines 307-327), so lambda_task stays 1; its stage 2 for driving scenes is not in
# the release (SEGMENTATION_PRESETS), so that stays the paper's.
CYCADA_FORMS = {
    "paper": {"classification": {}, "segmentation": {}},
    "release": {"classification": dict(semantic_judge="online", semantic_target="labels", semantic_gate=1.0,  # 2
                                       feature_start="pixel_only", lambda_task=0.0, feature_gate=0.6),  # stage 3
                "segmentation": dict(feature_start="pixel_only", feature_gate=0.6)},
}

# The forms the book compares (issue 25; benchmarks/cycada_forms.py runs them, chapter 9 shows them): the two
# whole forms and the single change of each stage that moves the release furthest from the paper. Each is a
# form of CYCADA_FORMS and the options set on top of it.
FORM_VARIANTS = {
    "paper": ("paper", {}),
    "release": ("release", {}),
    "stage3-release": ("paper", dict(feature_start="pixel_only", lambda_task=0.0)),  # f_T from pixel_only, GAN only
    "stage2-online": ("paper", dict(semantic_judge="online")),  # the semantic judge trained alongside
    # the release's stage 3 whole, with its learning rate (scripts/train_adda.py line 46): whether the GAN term
    # alone needs the release's small steps
    "stage3-release-lr": ("paper", dict(feature_start="pixel_only", lambda_task=0.0, feature_gate=0.6,
                                        feature_lr=1e-5)),
}
