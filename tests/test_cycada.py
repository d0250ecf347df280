"""CyCADA wiring: frozen f_S, the semantic term in the generator's gradient, stages, driver, CLI.

The loss functions themselves are tested in test_losses.py and the digit loaders in
test_data.py; everything here runs at smoke scale (tiny networks, a few dozen images).
"""
import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

import cyclelib
from cyclelib import CycleGAN, CyCADAConfig, cycada, cycada_run, export_safetensors, load_checkpoint, losses, run_cycada
from cyclelib.cli import main
from cyclelib.classifiers import build_task_network
from cyclelib.data import RandomlyInverted
from cyclelib.metrics import dark_digits, noise_effect
from cyclelib.networks import NoiseInput, build_generator
from cyclelib.cycada import STAGES, classifier_name, load_stage, parse_stages, semantic_consistency, stage_path, train_feature, train_pixel, train_source

RESULT_KEYS = ("source_only", "pixel_only", "feature_only", "pixel_feature", "target_oracle")


def smoke_config(out, **options) -> CyCADAConfig:
    return CyCADAConfig.for_scale("smoke", **{"source": "uci-digits", "target": "mnist5k", "out": str(out),
                                              **options})


def test_defaults_are_the_release_ones():
    c = CyCADAConfig()
    assert (c.task_lr, c.task_batch_size, c.task_epochs) == (1e-4, 128, 100)
    assert (c.feature_lr, c.feature_batch_size, c.feature_epochs) == (1e-5, 128, 200)
    cg = c.pixel_config("runs/pixel")
    assert (cg.lambda_gan_A, cg.lambda_gan_B, cg.lambda_A, cg.lambda_B, cg.lambda_identity) == (2, 1, 1, 1, 0)
    assert (c.lambda_sem_A, c.lambda_sem_B) == (1, 1)
    assert (cg.gan_mode, cg.lr, cg.beta1, cg.pool_size, cg.batch_size) == ("lsgan", 2e-4, 0.5, 50, 100)
    assert (cg.netG, cg.netD, cg.crop_size, cg.input_nc, cg.flip) == ("resnet_9blocks", "basic", 32, 3, False)
    assert cg.data == "mnist:usps"


@pytest.mark.parametrize("source, target, name", [
    ("mnist5k", "mnistm5k", "dtn"), ("svhn", "mnist", "dtn"), ("uci-digits", "mnist5k", "lenet"),
    ("mnist", "usps", "lenet")])
def test_classifier_follows_the_release_per_pair(source, target, name):
    assert classifier_name(CyCADAConfig(source=source, target=target)) == name


def test_adapter_brings_gan_images_to_lenet_and_passes_gradients():
    net = build_task_network("lenet")
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert net.input(x).shape == (2, 1, 28, 28)
    net(x).sum().backward()
    assert x.grad.abs().sum() > 0  # the semantic loss can reach the generator through it


def test_wrong_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown source 'mnist7'; valid values: mnist5k"):
        CyCADAConfig(source="mnist7")
    with pytest.raises(ValueError, match="unknown classifier 'vgg'"):
        CyCADAConfig(classifier="vgg")
    with pytest.raises(ValueError, match="unknown amp 'fp8'; valid values: none, bf16, fp16, auto"):
        CyCADAConfig(amp="fp8")
    with pytest.raises(ValueError, match="'pixels'.*valid values: source, feature_only, pixel"):
        parse_stages("source,pixels")
    assert parse_stages("oracle, source") == ("source", "oracle")  # run order, not given order


def test_semantic_loss_changes_the_generator_gradient_and_never_reaches_fs(tmp_path):
    config = smoke_config(tmp_path)
    cg = replace(config.pixel_config(str(tmp_path / "pixel")), pool_size=0)
    f_s = build_task_network("lenet")
    a, b = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1

    def generator_terms(extra):
        torch.manual_seed(1)  # identical initial weights for both models
        model = CycleGAN(cg, extra)
        terms, _ = model.generator_losses(a, b)
        return model, terms

    plain, plain_terms = generator_terms(None)
    model, terms = generator_terms(semantic_consistency(config, f_s))
    assert set(terms) - set(plain_terms) == {"sem_A", "sem_B"}
    params = list(model.G_A.parameters()) + list(model.G_B.parameters())
    grad = lambda loss, ps: torch.cat([g.flatten() for g in torch.autograd.grad(loss, ps, retain_graph=True)])
    with_sem = grad(sum(terms.values()), params)
    without = grad(sum(plain_terms.values()), list(plain.G_A.parameters()) + list(plain.G_B.parameters()))
    sem_only = grad(terms["sem_A"] + terms["sem_B"], params)
    assert sem_only.abs().sum() > 0
    assert not torch.allclose(with_sem, without)
    torch.testing.assert_close(with_sem, without + sem_only, rtol=1e-4, atol=1e-5)
    assert not f_s.training and all(not p.requires_grad for p in f_s.parameters())


def test_stages_chain_from_python_and_fs_stays_frozen(tmp_path):
    # DTN has BatchNorm: its running statistics must not move either.
    config = smoke_config(tmp_path, classifier="dtn")
    f_s = train_source(config, progress=False).train()  # handed over in train mode on purpose
    before = {k: v.clone() for k, v in f_s.state_dict().items()}
    gan = train_pixel(config, f_s, progress=False)
    assert not f_s.training and all(p.grad is None for p in f_s.parameters())
    f_t = train_feature(config, f_s, gan.G_A, progress=False)
    after = f_s.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "f_S changed during stages 2-3"
    assert any(not torch.equal(f_t.state_dict()[k], after[k]) for k in after), "f_T did not learn"
    history = load_checkpoint(stage_path(config, "feature"))["history"]
    assert {"task", "feature_gan", "D_feat"} <= set(history[0])


def test_feature_stage_never_reads_target_labels(tmp_path, monkeypatch):
    config = smoke_config(tmp_path)
    f_s = build_task_network(classifier_name(config))
    f_t = train_feature(config, f_s, progress=False).state_dict()

    real_load = cycada.load_domain

    def scrambled_target(config, name, split):
        domain = real_load(config, name, split)
        if name == config.target:
            domain.labels = torch.randint(10, domain.labels.shape, generator=torch.Generator().manual_seed(5))
        return domain

    monkeypatch.setattr(cycada, "load_domain", scrambled_target)
    scrambled = train_feature(config, f_s, progress=False).state_dict()
    assert all(torch.equal(f_t[k], scrambled[k]) for k in f_t)


def test_classifier_stages_train_under_bf16_autocast(tmp_path, monkeypatch):
    # amp reaches every stage: the classifier loop and the feature stage step under autocast
    # (bf16 runs on CPU too), and the pixel stage's CycleGAN gets the same setting.
    config = smoke_config(tmp_path, amp="bf16")
    assert config.pixel_config(str(tmp_path / "pixel")).amp == "bf16"
    logit_dtypes = set()
    task_loss = losses.task_loss
    monkeypatch.setattr(losses, "task_loss", lambda logits, y: logit_dtypes.add(logits.dtype)
                        or task_loss(logits, y))
    f_s = train_source(config, progress=False)
    f_t = train_feature(config, f_s, progress=False)
    assert logit_dtypes == {torch.bfloat16}
    history = load_checkpoint(stage_path(config, "feature_only"))["history"]
    assert all(torch.isfinite(torch.tensor(row["task"])) for row in history)
    assert any(not torch.equal(v, f_s.state_dict()[k]) for k, v in f_t.state_dict().items()), "f_T did not learn"
    assert all(p.dtype == torch.float32 for p in f_t.parameters())  # autocast keeps fp32 weights
    # the pixel stage too: LeNet's adapter resizes bf16 translations (CPUs resize them in fp32)
    train_pixel(config, f_s, progress=False)
    history = load_checkpoint(stage_path(config, "pixel"))["history"]
    assert all(torch.isfinite(torch.tensor(row["sem_A"])) for row in history)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    config = smoke_config(tmp_path_factory.mktemp("cycada"))
    return config, run_cycada(config, progress=False)


def test_smoke_pipeline_writes_complete_metrics_and_figures(smoke_run):
    config, returned = smoke_run
    out = stage_path(config, "source").parent.parent
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    # each accuracy is its classifier's on the evaluated test images, recomputed here
    def accuracy_on(domain, stage, transform=lambda x: x):
        test = cycada_run._eval_subset(cycada.load_domain(config, domain, "test"), config)
        x, y = torch.stack([x for x, _ in test]), torch.tensor([y for _, y in test])
        with torch.no_grad():
            return (load_stage(config, stage)(transform(x)).argmax(dim=1) == y).double().mean().item()

    for key, stage in zip(RESULT_KEYS, ("source", "pixel_only", "feature_only", "feature", "oracle")):
        assert metrics[key] == pytest.approx(accuracy_on(config.target, stage)), key
    assert metrics["source_test_accuracy"] == pytest.approx(accuracy_on(config.source, "source"))
    G_A = load_stage(config, "pixel").G_A
    assert metrics["label_preservation"] == pytest.approx(accuracy_on(config.source, "source", G_A))
    assert (metrics["source"], metrics["target"], metrics["scale"], metrics["seed"]) == \
        ("uci-digits", "mnist5k", "smoke", 0)
    assert len(metrics["confusion"]["pixel_feature"]) == 10 and set(metrics["wall_s"]) == set(STAGES)
    for name in ("samples.png", "curves.png", "confusion/pixel_feature.png", "confusion/target_oracle.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name


def test_oracle_label_preservation_is_the_oracles_reading_of_translated_source(smoke_run):
    config, metrics = smoke_run
    oracle, translator = load_stage(config, "oracle"), load_stage(config, "pixel").G_A  # eval mode
    source_test = cycada_run._eval_subset(cycada.load_domain(config, config.source, "test"), config)
    x = torch.stack([x for x, _ in source_test])  # [N, 3, H, W]
    y = torch.tensor([y for _, y in source_test])  # [N]
    with torch.no_grad():
        expected = (oracle(translator(x)).argmax(dim=1) == y).double().mean().item()
    assert metrics["oracle_label_preservation"] == pytest.approx(expected)


def test_rerun_skips_finished_stages(smoke_run, capsys):
    config, first = smoke_run
    written = {s: stage_path(config, s).stat().st_mtime_ns for s in STAGES}
    again = run_cycada(config, progress=False)
    printed = capsys.readouterr().out
    assert all(f"skipping {s}:" in printed for s in STAGES)
    assert {s: stage_path(config, s).stat().st_mtime_ns for s in STAGES} == written
    assert all(again[k] == first[k] for k in RESULT_KEYS)


def test_torchrun_runs_only_the_pixel_stage_distributed(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="only the 'pixel' stage runs distributed.*stages source, oracle"):
        run_cycada(smoke_config(tmp_path), stages="source,pixel,oracle", progress=False)
    assert not (tmp_path / "source").exists()  # refused before any stage ran


def test_missing_stage_checkpoint_names_file_and_stage(tmp_path):
    config = smoke_config(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"source[/\\]checkpoint\.pt is missing.*--stages source"):
        run_cycada(config, stages="feature", progress=False)
    with pytest.raises(FileNotFoundError, match=r"pixel[/\\]checkpoint\.pt is missing.*'pixel' stage"):
        load_stage(config, "pixel")


def test_cli_runs_the_chosen_stages(tmp_path, capsys):
    main(["train", "cycada", "--source", "uci-digits", "--target", "mnist5k", "--out", str(tmp_path),
          "--scale", "smoke", "--stages", "source,oracle", "--task-epochs", "2"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"source_only", "target_oracle"} <= set(metrics) and "pixel_feature" not in metrics
    assert json.loads((tmp_path / "config.json").read_text())["task_epochs"] == 2
    assert "target_oracle" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--netG", "nosuch"], "unknown generator arch 'nosuch'"), (["--norm", "foo"], "unknown norm 'foo'"),
    (["--pool-size", "-3"], "pool_size must be >= 0, got -3"), (["--netD", "big"], "unknown netD 'big'"),
    (["--pixel-beta1", "1.5"], "pixel_beta1 must be in [0, 1)")])
def test_pixel_options_are_checked_before_any_stage_runs(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cycada", "--source", "uci-digits", "--target", "mnist5k", "--out", str(out),
              "--scale", "smoke", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()  # not even the source stage ran


def test_identity_weight_multiplies_each_cycle_weight_as_in_cyclegan():
    # The release's pixel stage is CycleGAN's code: idt_A = lambda_B * lambda_identity * L1(G_A(b), b)
    config = CyCADAConfig(lambda_cycle_A=1, lambda_cycle_B=4, lambda_identity=0.5, netG="resnet_1blocks", ngf=4,
                          ndf=4)
    model = CycleGAN(config.pixel_config("unused"))
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    terms, images = model.generator_losses(a, b)
    torch.testing.assert_close(terms["idt_A"], 4 * 0.5 * cyclelib.identity_loss(images["idt_A"], b))
    torch.testing.assert_close(terms["idt_B"], 1 * 0.5 * cyclelib.identity_loss(images["idt_B"], a))


def test_the_classifier_input_reads_colour_as_grey_like_every_other_reader():
    # LeNet sees luma, as PIL's "L" and the digit domains read colour images as grey (not the channel mean)
    adapter = build_task_network("lenet").input
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 28, 28)  # pure red in [-1, 1]
    grey = adapter(red)
    assert grey.shape == (1, 1, 28, 28)
    torch.testing.assert_close(grey, torch.full((1, 1, 28, 28), 0.299 - 0.587 - 0.114))
    pil_red = Image.new("RGB", (28, 28), (255, 0, 0)).convert("L").getpixel((0, 0)) / 127.5 - 1
    assert grey[0, 0, 0, 0].item() == pytest.approx(pil_red, abs=1 / 255)


def test_every_stage_exports_to_safetensors_and_loads_back(tmp_path):
    config = smoke_config(tmp_path / "run")
    run_cycada(config, stages=("source", "pixel", "feature_only"), progress=False)
    for stage in ("source", "pixel", "feature_only"):
        exported = export_safetensors(stage_path(config, stage), tmp_path / f"{stage}.safetensors")
        shared, ckpt = load_checkpoint(exported), load_checkpoint(stage_path(config, stage))
        assert (shared["kind"], shared["config"], shared["meta"]) == (ckpt["kind"], ckpt["config"], ckpt["meta"])
        assert shared["nets"].keys() == ckpt["nets"].keys() and "training" not in shared
        assert all(torch.equal(shared["nets"][k], v) for k, v in ckpt["nets"].items())


def test_cli_wrong_dataset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cycada", "--source", "mnist7", "--target", "mnist5k", "--out", str(tmp_path),
              "--scale", "smoke"])
    assert exit_info.value.code == 2
    assert "unknown source 'mnist7'; valid values:" in capsys.readouterr().err


def test_sample_grid_columns_hold_one_class_in_every_row():
    # uci-digits' test split is shuffled: a target picked by position would be any digit
    source = [(torch.zeros(3, 4, 4), y) for y in (2, 0, 2, 1, 3)]
    target = [(torch.zeros(3, 4, 4), y) for y in (1, 1, 0, 5, 2, 0)]
    classes, picks_s, picks_t = cycada_run._class_columns(source, target)
    assert classes == [0, 1, 2]  # class 3 has no target image, class 5 no source image
    assert [source[i][1] for i in picks_s] == classes and [target[i][1] for i in picks_t] == classes
    assert (picks_s, picks_t) == ([1, 3, 0], [2, 0, 4])  # the first image of each class
    # no class in common: source columns only, and no target row
    assert cycada_run._class_columns(source[:1], target[:2]) == ([2], [0], None)


def test_noise_input_and_the_dark_digit_counts_beyond_the_paper(tmp_path):
    """Chapter 10's option: G_{S->T} takes noise channels (off by default), so one source digit can
    become several target looks; and mnist5k -> mnistm5k runs count the dark digits."""
    config = CyCADAConfig.for_scale("smoke", source="mnist5k", target="mnistm5k", out=str(tmp_path), noise_nc=2)
    assert CyCADAConfig().noise_nc == 0 and "noise_nc" in cycada.STAGE_OPTIONS["pixel"]
    metrics = run_cycada(config, stages=("source", "pixel"), progress=False)
    G_A = load_stage(config, "pixel").G_A
    assert isinstance(G_A, NoiseInput) and G_A.input_nc == 3 and G_A.net.input_nc == 5
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(0)
        first, again = G_A(x), G_A(x)
        torch.manual_seed(0)
        assert not torch.equal(first, again) and torch.equal(first, G_A(x))  # noise from the seeded global RNG
    test = cycada_run._eval_subset(cycada.load_domain(config, "mnistm5k", "test"), config)
    ink = torch.stack([x for x, _ in cycada_run._eval_subset(cycada.load_domain(config, "mnist5k", "test"), config)])
    dark = dark_digits(torch.stack([x for x, _ in test]), ink.mean(dim=1) > 0)
    found = metrics["dark_digits"]
    assert found["target"] == pytest.approx(dark.float().mean().item()) and 0.1 < found["target"] < 0.7
    assert 0 <= found["translated"] <= 1 and set(found["by_result"]) == {"source_only"}
    # the constant noise channels are erased by the first instance norm: the translation ignores them
    assert metrics["noise_effect"] < 1e-4
    modulated = build_generator("resnet_1blocks", width=4, noise_nc=2, noise_injection="modulate")
    assert noise_effect(modulated, test) > 0.01


def test_the_evaluation_seeds_the_noise_and_leaves_the_callers_rng_alone(tmp_path):
    """A modulated noise input moves the translation (noise_effect > 0): evaluated after different draws of the
    global RNG, the metrics are the same, and the caller's RNG goes on as if no evaluation had run."""
    config = CyCADAConfig.for_scale("smoke", source="mnist5k", target="mnistm5k", out=str(tmp_path), noise_nc=2,
                                    noise_injection="modulate")
    run_cycada(config, stages=("source", "pixel"), progress=False)
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        results.append({k: v for k, v in cycada_run.evaluate_stages(config).items() if k != "wall_s"})
        assert torch.equal(torch.get_rng_state(), state)
    assert results[0] == results[1] and results[0]["noise_effect"] > 0


def test_instance_norm_erases_constant_noise_channels_but_not_modulated_image_copies():
    """Why chapter 10's first attempt saw no effect of the noise: a constant channel shifts each
    feature map of the first conv by a constant, which the instance norm behind it subtracts."""
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    low, high = torch.full((2, 4, 1, 1), -1.0), torch.full((2, 4, 1, 1), 1.0)
    changes = {}
    for injection in ("constant", "modulate"):
        torch.manual_seed(0)
        G = build_generator("resnet_2blocks", width=8, noise_nc=4, noise_injection=injection).eval()
        assert G.input_nc == 3 and G.net.input_nc == (7 if injection == "constant" else 15)
        with torch.no_grad():
            changes[injection] = (G(x, low) - G(x, high)).abs().max().item()
    assert changes["constant"] < 1e-4 < 0.1 < changes["modulate"]


def test_dark_digits_compares_the_ink_with_the_paper():
    strokes = torch.zeros(2, 8, 8, dtype=torch.bool)
    strokes[:, 2:6, 3:5] = True
    light = torch.where(strokes, 0.9, -0.5)[:, None].expand(-1, 3, -1, -1)  # bright digit on a dark photo
    assert dark_digits(torch.cat([light, -light]), torch.cat([strokes, strokes])).tolist() == \
        [False, False, True, True]


def test_the_semantic_loss_can_be_judged_by_the_feature_only_classifier(tmp_path, monkeypatch):
    """Chapter 10's second option: f_T of the feature_only stage (it has seen target images)
    judges L_sem instead of f_S; the pixel stage then builds on that stage, and on its options."""
    config = smoke_config(tmp_path, semantic_judge="feature_only")
    judges = []
    real = cycada.semantic_consistency
    monkeypatch.setattr(cycada, "semantic_consistency", lambda c, f: judges.append(f) or real(c, f))
    with pytest.raises(FileNotFoundError, match="the 'feature_only' stage has not been run"):
        run_cycada(config, stages=("pixel",), progress=False)  # its judge is missing
    run_cycada(config, stages=("source", "feature_only", "pixel"), progress=False)
    f_t = load_stage(config, "feature_only")
    (judge,) = judges
    assert all(torch.equal(a, b) for a, b in zip(judge.state_dict().values(), f_t.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(judge.state_dict().values(),
                                                     load_stage(config, "source").state_dict().values()))
    assert "feature_lr" in cycada.stage_options(config, "pixel")
    assert "feature_lr" not in cycada.stage_options(smoke_config(tmp_path), "pixel")
    with pytest.raises(ValueError, match="feature_lr=.* there"):  # another f_T would have judged
        cycada.stage_finished(replace(config, feature_lr=0.5), "pixel")
    with pytest.raises(ValueError, match="unknown semantic_judge 'oracle'"):  # target labels are off limits
        CyCADAConfig(semantic_judge="oracle")


def test_invert_source_shows_f_s_a_share_of_negated_digits(tmp_path):
    """Chapter 10's third option: f_S learns both polarities from the labelled source alone."""
    domain = cycada.load_domain(smoke_config(tmp_path), "mnist5k", "train")
    flipped = RandomlyInverted(domain, 0.5, seed=0)
    negated = [torch.equal(flipped[i][0], -domain[i][0]) for i in range(200)]
    assert all(negated[i] or torch.equal(flipped[i][0], domain[i][0]) for i in range(200))
    assert 70 < sum(negated) < 130 and all(flipped[i][1] == domain[i][1] for i in range(200))
    again = [torch.equal(RandomlyInverted(domain, 0.5, seed=0)[i][0], -domain[i][0]) for i in range(200)]
    assert again == negated  # a pure function of (seed, epoch, index): resumable
    flipped.set_epoch(1)
    assert [torch.equal(flipped[i][0], -domain[i][0]) for i in range(200)] != negated
    assert "invert_source" in cycada.STAGE_OPTIONS["feature"]
    with pytest.raises(ValueError, match=r"invert_source must be in \[0, 1\]"):
        CyCADAConfig(invert_source=1.5)


def test_seed_metrics_load_in_seed_order_and_a_mislabelled_file_is_named(tmp_path):
    for seed in (2, 0, 1):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "metrics.json").write_text(json.dumps({"seed": seed, "source_only": seed / 10}))
    runs = cycada_run.load_seed_metrics(tmp_path)
    assert list(runs) == [0, 1, 2] and [m["source_only"] for m in runs.values()] == [0.0, 0.1, 0.2]
    (tmp_path / "seed1" / "metrics.json").write_text(json.dumps({"seed": 5}))
    with pytest.raises(ValueError, match="seed1.*seed 5, not of seed 1"):
        cycada_run.load_seed_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="no seed"):
        cycada_run.load_seed_metrics(tmp_path / "empty")


def test_polarity_figure_draws_a_light_and_a_dark_bar_per_result():
    from cyclelib.plots import polarity_figure
    by_result = {"source_only": {"light": 0.8, "dark": 0.1}, "pixel_feature": {"light": 0.9, "dark": 0.3}}
    fig = polarity_figure(by_result, {"source_only": "source only", "pixel_feature": "pixel + feature"}, title="t")
    bars = fig.axes[0].patches
    assert [round(b.get_width(), 2) for b in bars] == [0.8, 0.9, 0.1, 0.3]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["source only", "pixel + feature"]
