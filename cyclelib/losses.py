"""Every loss of CycleGAN and CyCADA, one function each.

Each docstring gives the equation it implements, in the notation of the book
(G: X -> Y, F: Y -> X, discriminators D_X and D_Y, source classifier f_S).
All functions return a scalar tensor averaged over the batch.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .names import GAN_MODES  # noqa: F401 (also read from here)


def gan_loss(prediction: torch.Tensor, target_is_real: bool, mode: str = "lsgan",
             for_discriminator: bool = True) -> torch.Tensor:
    r"""Adversarial loss :math:`\mathcal{L}_{GAN}(G, D_Y, X, Y)` for one side of the game.

    The notes write the GAN objective as

    .. math::
        \mathcal{L}_{GAN}(G, D_Y, X, Y) = \mathbb{E}_{y}[\log D_Y(y)]
            + \mathbb{E}_{x}[\log(1 - D_Y(G(x)))]

    which D maximises and G minimises. This function returns the term for a batch of
    discriminator outputs ``prediction`` (logits, any shape, e.g. PatchGAN maps
    [N, 1, 30, 30]) that should be judged real (``target_is_real=True``) or fake:

    - ``vanilla``: :math:`\mathrm{BCE}(\sigma(p), t)`, i.e. :math:`-\log D` for real and
      :math:`-\log(1-D)` for fake; the generator uses the non-saturating form
      :math:`-\log D(G(x))` (pass ``target_is_real=True``), as the official code does.
    - ``lsgan`` (CycleGAN's default): :math:`\mathbb{E}[(p - t)^2]` with :math:`t \in \{1, 0\}`.
    - ``wgangp``: :math:`-\mathbb{E}[p]` for real and :math:`\mathbb{E}[p]` for fake
      (add :func:`gradient_penalty` to the discriminator loss).
    - ``hinge``: discriminator :math:`\mathbb{E}[\max(0, 1 - p)]` for real and
      :math:`\mathbb{E}[\max(0, 1 + p)]` for fake; generator :math:`-\mathbb{E}[p]`
      (``for_discriminator=False``).
    """
    if mode == "lsgan":
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return F.mse_loss(prediction, target)
    if mode == "vanilla":
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return F.binary_cross_entropy_with_logits(prediction, target)
    if mode == "wgangp":
        return -prediction.mean() if target_is_real else prediction.mean()
    if mode == "hinge":
        if not for_discriminator:
            return -prediction.mean()
        return F.relu(1 - prediction).mean() if target_is_real else F.relu(1 + prediction).mean()
    raise ValueError(f"unknown gan_mode {mode!r}; valid values: {', '.join(GAN_MODES)}")


def discriminator_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor,
                       judge: Callable[[torch.Tensor, bool], torch.Tensor] = gan_loss) -> torch.Tensor:
    r"""The loss a discriminator minimises, from its outputs on real and on generated inputs.

    .. math::
        \mathcal{L}_D = \tfrac{1}{2}\big(\ell(D(y), \text{real}) + \ell(D(G(x)), \text{fake})\big)

    i.e. the negated :math:`\mathcal{L}_{GAN}` that D maximises, with each side's term given by
    ``judge(prediction, target_is_real)``: :func:`gan_loss` (bind its ``mode``) for the image
    discriminators of CycleGAN, :func:`feature_gan_loss` for CyCADA's :math:`D_{feat}`. The
    factor 1/2 is the official code's: it slows D down relative to G.
    """
    return 0.5 * (judge(pred_real, True) + judge(pred_fake, False))


def gradient_penalty(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     weight: float = 10.0) -> torch.Tensor:
    r"""WGAN-GP gradient penalty (Gulrajani et al. 2017).

    .. math::
        \lambda_{GP}\, \mathbb{E}_{\hat x}\big[(\lVert \nabla_{\hat x} D(\hat x) \rVert_2 - 1)^2\big],
        \qquad \hat x = \epsilon x_{real} + (1-\epsilon) x_{fake},\ \epsilon \sim U[0, 1]

    with one :math:`\epsilon` per sample from the global RNG, as in the official
    ``cal_gradient_penalty`` (type ``mixed``). ``real`` and ``fake``: [N, C, H, W].
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1))).to(real)
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = discriminator(mixed)
    # create_graph: the penalty itself is differentiated in D's backward pass.
    (grad,) = torch.autograd.grad(out, mixed, torch.ones_like(out), create_graph=True)
    norm = (grad.flatten(1) + 1e-16).norm(2, dim=1)  # [N]
    return weight * ((norm - 1) ** 2).mean()


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    r"""One of the two terms of the cycle-consistency loss (L1), e.g. the forward cycle.

    .. math::
        \mathcal{L}_{cyc}(G, F) =
            \underbrace{\mathbb{E}_{x}\big[\lVert F(G(x)) - x \rVert_1\big]}_{\texttt{cycle\_loss(F(G(x)), x)}}
            + \underbrace{\mathbb{E}_{y}\big[\lVert G(F(y)) - y \rVert_1\big]}_{\texttt{cycle\_loss(G(F(y)), y)}}

    This function returns one term; :meth:`~cyclelib.cyclegan.CycleGAN.generator_losses`
    weights each (``lambda_A``, ``lambda_B``) and the generator step sums them. The mean over
    pixels matches the official ``nn.L1Loss``.
    """
    return F.l1_loss(reconstructed, original)


def identity_loss(same: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    r"""One of the two terms of the identity loss (Zhu et al., section 5.2), e.g. G's.

    .. math::
        \mathcal{L}_{identity}(G, F) =
            \underbrace{\mathbb{E}_{y}\big[\lVert G(y) - y \rVert_1\big]}_{\texttt{identity\_loss(G(y), y)}}
            + \underbrace{\mathbb{E}_{x}\big[\lVert F(x) - x \rVert_1\big]}_{\texttt{identity\_loss(F(x), x)}}

    A generator fed an image that is already in its output domain should leave it unchanged,
    which keeps colours. This function returns one term;
    :meth:`~cyclelib.cyclegan.CycleGAN.generator_losses` weights each and the generator step
    sums them.
    """
    return F.l1_loss(same, original)


def mode_seeking_loss(out_1: torch.Tensor, out_2: torch.Tensor, z_1: torch.Tensor, z_2: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    r"""Mode-seeking loss (Mao et al., CVPR 2019), beyond CycleGAN and CyCADA: a generator that
    takes noise should give different outputs for different noise.

    .. math::
        \mathcal{L}_{ms} = \Big(\frac{\mathbb{E}\,\lVert G(x, z_1) - G(x, z_2) \rVert_1}
            {\mathbb{E}\,\lVert z_1 - z_2 \rVert_1} + \epsilon\Big)^{-1}

    ``out_1``, ``out_2``: [N, C, H, W], the same images translated under noise ``z_1``, ``z_2``.
    Minimising it makes the outputs move with the noise, so that the noise can carry modes the
    deterministic translation misses (conditional GANs otherwise learn to ignore it).
    """
    ratio = (out_1 - out_2).abs().mean() / (z_1 - z_2).abs().mean()
    return 1 / (ratio + eps)


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Task loss of CyCADA: cross-entropy of a classifier on labelled images.

    .. math::
        \mathcal{L}_{task}(f, X, Y) = -\mathbb{E}_{(x, y)}
            \sum_{k=1}^{K} \mathbb{1}[k = y] \log \sigma(f(x))_k

    ``logits``: [N, K]; ``labels``: [N] class indices.
    """
    return F.cross_entropy(logits, labels)


def semantic_loss(classifier: torch.nn.Module, real: torch.Tensor,
                  translated: torch.Tensor) -> torch.Tensor:
    r"""One of the two terms of CyCADA's semantic consistency loss, e.g. the S -> T one.

    .. math::
        \mathcal{L}_{sem}(G_{S\to T}, G_{T\to S}, X_S, X_T, f_S) =
            \mathcal{L}_{task}(f_S, G_{T\to S}(X_T), p(f_S, X_T))
            + \underbrace{\mathcal{L}_{task}(f_S, G_{S\to T}(X_S), p(f_S, X_S))}_{
                \texttt{semantic\_loss(f\_S, x\_s, G(x\_s))}}

    where :math:`p(f, X) = \arg\max f(X)` are the labels the frozen, pretrained
    source classifier gives the real images. This function returns one term;
    :func:`cyclelib.semantic.semantic_consistency` weights both and adds them to the
    generator's terms. The classifier must be in eval mode with
    ``requires_grad=False``: the gradient reaches only the generator, through
    ``translated``. ``real`` and ``translated``: [N, C, H, W] in the classifier's
    input format.

    The same function is the per-pixel loss of CyCADA for segmentation when ``classifier``
    is a segmenter (scores [N, K, H, W]): the target of every pixel of :math:`G(x)` is the
    frozen :math:`f_S`'s argmax at that pixel of :math:`x`, and the cross-entropy is
    averaged over the pixels (no pixel is ignored: :math:`f_S` labels every one),

    .. math::
        \mathcal{L}_{sem} = -\frac{1}{NHW}\sum_{n,h,w}
            \log \sigma\big(f_S(G(x_n))_{:,h,w}\big)_{p_{nhw}},
        \qquad p_{nhw} = \arg\max_k f_S(x_n)_{k,h,w},

    the paper's equation per pixel. The release's semantic model (its CycleGAN submodule,
    jhoffman/pytorch-CycleGAN-and-pix2pix at e484612, models/cycle_gan_semantic_model.py lines
    163-167) has the classification form only, with the true source labels as the S -> T target;
    how its GTA5 -> Cityscapes CycleGAN was trained the release does not say (the submodule's only
    training script, train_cycada.sh, is for digits).
    """
    with torch.no_grad():
        labels = classifier(real).argmax(dim=1)  # [N]
    return task_loss(classifier(translated), labels)


def segmentation_loss(scores: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None,
                      ignore_index: int = 255) -> torch.Tensor:
    r"""Per-pixel task loss of CyCADA for segmentation: cross-entropy over the labelled pixels.

    .. math::
        \mathcal{L}_{task}(f, X, Y) = -\frac{\sum_{n,h,w} \mathbb{1}[y_{nhw} \ne 255]\,
            w_{y_{nhw}} \log \sigma\big(f(x_n)_{:,h,w}\big)_{y_{nhw}}}
            {\sum_{n,h,w} \mathbb{1}[y_{nhw} \ne 255]\, w_{y_{nhw}}}

    ``scores``: [N, K, H, W]; ``labels``: [N, H, W] class indices, ``ignore_index`` (255)
    for pixels without a class; ``class_weights``: [K] (all 1 without). The weighted mean
    is the release's ``supervised_loss`` (``NLLLoss(weight, size_average=True,
    ignore_index=255)`` of ``log_softmax``, scripts/train_fcn_adda.py lines 55-59). A batch
    with no labelled pixel gives 0 (the release skips it, train_fcn_adda.py lines 27-39 and
    193-194); a label outside ``0..K-1`` other than ``ignore_index`` raises ``ValueError``.
    """
    if scores.dim() != 4 or labels.shape != scores.shape[:1] + scores.shape[2:]:
        raise ValueError(f"scores must be N x K x H x W and labels N x H x W, got shapes {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")
    labelled = labels != ignore_index
    bad = labelled & ((labels < 0) | (labels >= scores.shape[1]))
    if bad.any():
        raise ValueError(f"label {int(labels[bad][0])} is neither a class (0..{scores.shape[1] - 1}) nor the "
                         f"ignore label {ignore_index}")
    if not labelled.any():
        return scores.sum() * 0  # keeps the graph: a backward pass through it is a no-op
    return F.cross_entropy(scores, labels.long(), weight=class_weights, ignore_index=ignore_index)


def feature_gan_loss(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    r"""Feature-level adversarial loss of CyCADA, ADDA style, on a 2-way discriminator.

    .. math::
        \mathcal{L}_{GAN}(f_T, D_{feat}, f_S(G_{S\to T}(X_S)), X_T) =
            \mathbb{E}[\log D_{feat}(f_S(G_{S\to T}(x_s)))]
            + \mathbb{E}[\log(1 - D_{feat}(f_T(x_t)))]

    ``logits``: [N, 2] outputs of :class:`~cyclelib.classifiers.FeatureDiscriminator`,
    whose class 1 means "translated source" (real for this game) and class 0
    "target". The discriminator uses the true domains; f_T is trained with
    ``target_is_real=True`` on its target features (the inverted-label ADDA loss).

    For segmentation ``logits`` are per-pixel, [N, 2, H, W], from
    :class:`~cyclelib.segnets.ScoreDiscriminator` on score maps, and the loss is the
    mean over pixels,

    .. math::
        -\frac{1}{NHW}\sum_{n,h,w} \log \sigma\big(D(f(x_n))_{:,h,w}\big)_{t},
        \qquad t = 1 \text{ (source) or } 0 \text{ (target)},

    the release's ``--discrim_score`` game: D learns 1 for source and 0 for target scores
    (scripts/train_fcn_adda.py lines 231-243), the target network 1 for its target
    scores (lines 288-296).
    """
    labels = torch.full(logits.shape[:1] + logits.shape[2:], int(target_is_real), dtype=torch.long,
                        device=logits.device)
    return F.cross_entropy(logits, labels)
