"""cyclelib: train CycleGAN and CyCADA, translate, test, evaluate, export, download, bench.

Every field of a config dataclass is an option (``--lambda-A 5``, ``--no-flip``), its help read
from the field (:mod:`cyclelib.arguments`); options given on the command line win over the
scale's preset, which wins over the paper's defaults. The parser is built without torch; each
command imports what it runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .arguments import (add_arch_argument, add_bench_arguments, add_config_options, choice, given_options, one_of,
                        positive_int, refuse_official_options)
from .config import CyCADAConfig, CycleGANConfig, recorded_options
from .presets import CYCADA_FORMS, CYCLEGAN_PRESETS, cycada_presets_by_kind, cyclegan_preset
from .download import (CYCLEGAN_DATASETS, DIGIT_FILES, PRETRAINED_MODELS, PRETRAINED_SIZES, RELEASE_MODELS,
                       DownloadError, download_dataset, download_digits, download_pretrained, download_release_model)
from .names import (AMP_MODES, CYCADA_STAGES, DIGIT_DOMAINS, DIRECTIONS, EXPORT_FORMATS, GTA5_PARTS, KID_SUBSETS,
                    NORMS, SCALES)


def _train_cyclegan(args) -> None:
    from .runs import RunFolderError
    from .runtime import resolve_scale
    from .cyclegan_run import read_resumable, train_cyclegan
    from .distributed import launched
    options = given_options(args, CycleGANConfig)
    if args.resume:
        if args.overwrite:  # before the checkpoint is read (run_folder refuses the pair the same way)
            raise RunFolderError(f"--resume and --overwrite contradict each other: resuming continues the run in "
                                 f"{args.resume}, overwriting deletes it; give one of them")
        if args.scale:
            raise ValueError(f"--scale picks the preset of a new run; the run in {args.resume} goes on with its own "
                             "options: give the ones to change instead")
        if "out" in options and Path(options["out"]).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--out {options['out']} with --resume {args.resume}: a run goes on in its own folder; "
                             f"copy it to {options['out']} and resume the copy to continue it there")
        # The run's own config, with any option given now on top: those a run keeps for its life
        # must be the run's (train_cyclegan refuses others, naming them), the rest apply from here.
        saved = recorded_options(read_resumable(args.resume, step=args.from_step)[0]["config"])
        config = CycleGANConfig(**{**saved, **options, "out": str(args.resume)})
        origin = dict.fromkeys(options, "command line")
    else:
        if args.from_step is not None:
            raise ValueError(f"--from-step {args.from_step} picks the checkpoint of a run to go on from: "
                             "give --resume DIR")
        if "data" not in options:
            raise ValueError("--data is required (a folder with trainA/trainB, "
                             "or a digit pair such as mnist5k:mnistm5k)")
        config = CycleGANConfig.for_scale(args.scale, **options)
        scale = resolve_scale(args.scale)
        origin = {**dict.fromkeys(cyclegan_preset(scale, config.data), f"scale {scale} preset"),
                  **dict.fromkeys(options, "command line")}
    first = launched()[0] == 0  # under torchrun, rank 0 speaks for every rank
    if first:
        print(f"training CycleGAN on {config.data} -> {config.out}")
    try:
        model = train_cyclegan(config, resume=bool(args.resume), overwrite=args.overwrite, origin=origin,
                               from_step=args.from_step)
    except ImportError as e:  # an optional package (--tensorboard, --wandb) is missing: the machine's to fix
        raise SystemExit(f"cyclelib: error: {e}") from None
    limit = (f"max_steps {config.max_steps}" if model.stopped_by == "max_steps"
             else f"the end of its {config.n_epochs + config.n_epochs_decay} epochs")
    if first:
        print(f"done: stopped by {limit}; checkpoint {Path(config.out) / 'checkpoint.pt'}, samples in "
              f"{Path(config.out) / 'samples'}")


def _train_cycada(args) -> None:
    from .cycada import RESULTS
    from .cycada_run import run_cycada
    options = given_options(args, CyCADAConfig)
    options.pop("scale", None)  # --scale picks the preset below
    missing = [f"--{name}" for name in ("source", "target") if name not in options]
    if missing:
        raise ValueError(f"train cycada: {' and '.join(missing)} required (digit domains such as "
                         "mnist5k, uci-digits, mnistm5k, mnist, usps, svhn, mnistm, or folder:PATH; with --task "
                         "segmentation mnist-scenes, mnistm-scenes, gta5:PATH or cityscapes:PATH)")
    config = CyCADAConfig.for_scale(args.scale, args.form, **options)
    print(f"CyCADA {config.source} -> {config.target} ({config.scale} scale) -> {config.out}")
    metrics = run_cycada(config, stages=args.stages, force=args.force)
    for key in (*RESULTS.values(), "label_preservation", "oracle_label_preservation"):
        if key in metrics:
            print(f"{key:>25}: {metrics[key]:.4f}")
    print(f"done: {Path(config.out) / 'metrics.json'}")


def _official(args) -> dict:
    """The options that describe an official generator file."""
    return dict(arch=args.arch, norm=args.norm, input_nc=args.input_nc, output_nc=args.output_nc,
                width=args.width, dropout=args.dropout)


def _translate(args) -> None:
    from .translate import load_generator, translate_folder
    generator = load_generator(args.checkpoint, args.direction, sha256=args.sha256, step=args.step, **_official(args))
    written = translate_folder(generator, args.input, args.output, batch_size=args.batch_size,
                               size=args.size, device=args.device, overwrite=args.overwrite, amp=args.amp,
                               tile=args.tile, overlap=args.overlap)
    print(f"translated {len(written)} images into {args.output}")


def _evaluate(args) -> None:
    from . import evaluate
    given = {name for name in ("checkpoint", "data", "fake", "real") if getattr(args, name)}
    if given not in ({"checkpoint", "data"}, {"fake", "real"}):
        raise ValueError("give either --checkpoint and --data (a run's translations) or --fake and --real (two "
                         "folders of images)")
    runs = "checkpoint" in given
    if not runs and (args.oracle or args.translations):
        raise ValueError("--oracle and --translations apply to a run (--checkpoint and --data), not to --fake/--real")
    options = dict(batch_size=args.batch_size, device=args.device, kid_subsets=args.kid_subsets,
                   kid_subset_size=args.kid_subset_size)
    try:
        if runs:
            checkpoint = Path(args.checkpoint)
            folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
            out = args.json or folder / f"evaluate_{args.direction}_{args.phase}.json"
            result = evaluate.evaluate_run(checkpoint, args.data, args.direction, args.phase, oracle=args.oracle,
                                           translations=args.translations, out=out, **options)
        else:
            out = args.json or "evaluate.json"
            result = evaluate.evaluate_folders(args.fake, args.real, out=out, **options)
    except ImportError as e:  # torch-fidelity is an optional extra: the machine's to fix, as an OSError
        print(f"cyclelib: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"FID {result['fid']:.3f}, KID {result['kid_mean']:.5f} ± {result['kid_std']:.5f} ({result['fake_images']} "
          f"translated/fake images against {result['real_images']} real ones)")
    for key in ("oracle_accuracy", "label_preservation"):
        if key in result:
            print(f"{key}: {result[key]:.4f}")
    print(f"written with its protocol to {out}")


def _export(args) -> None:
    from .export import export_generator
    try:
        path = export_generator(args.checkpoint, args.output, args.format, args.direction, sha256=args.sha256,
                                **_official(args))
    except ImportError as e:  # an optional package is missing: the machine's to fix
        raise SystemExit(f"cyclelib: error: {e}") from None
    print(f"exported the generator of {args.checkpoint} as {args.format} to {path}")


def _test(args) -> None:
    from .testpage import load_pair, write_test_page
    G_A, G_B, source = load_pair(args.checkpoint, args.checkpoint_A, args.checkpoint_B, step=args.step,
                                 **_official(args))
    page = write_test_page(G_A, G_B, args.dataroot, args.results, phase=args.phase, num_test=args.num_test,
                           batch_size=args.batch_size, size=args.size, device=args.device, amp=args.amp,
                           title=source)
    print(f"test page: {page}")


def _add_translation_options(parser: argparse.ArgumentParser) -> None:
    """How images are translated: the options translate and test share."""
    parser.add_argument("--step", type=positive_int, default=None,
                        help="with a run folder: its checkpoint of step STEP (checkpoints/step_XXXXXXX.pt) instead "
                             "of the latest")
    parser.add_argument("--batch-size", type=positive_int, default=4,
                        help="images of one size translated together (default: 4: 1,500 images of 256x256 peak at "
                             "1.09 GB on a CPU, 1.33 GB with 8; python benchmarks/translate_memory.py)")
    parser.add_argument("--size", type=int, default=None,
                        help="resize to SIZE x SIZE first (default: keep each image's size)")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: CUDA when present, else "
                                                       "the CPU)")
    parser.add_argument("--amp", **choice("amp", AMP_MODES), default="none",
                        help="precision (default: none, fp32; bf16 changes some 8-bit pixels by a few levels)")
    _add_official_options(parser)


def _download(args) -> None:
    if args.parts is not None and args.name != "gta5":
        raise ValueError("--parts picks parts of gta5 only" + (f", and {args.name} has none" if args.name else ""))
    if args.list:
        print(download_listing())
    elif args.name is None:
        raise ValueError("download: give a NAME, or --list for the names")
    elif args.pretrained:
        path = download_pretrained(args.name, args.root)
        print(f"downloaded to {path}\ntranslate with: cyclelib translate --checkpoint {path} "
              f"--input FOLDER --output FOLDER")
    elif args.name in (*CYCLEGAN_DATASETS, "cityscapes"):
        print(f"downloaded to {download_dataset(args.name, args.root or 'datasets')}")
    elif args.name in DIGIT_FILES:
        print(f"downloaded to {download_digits(args.name, args.root)}")
    elif args.name in ("gta5", "cyclegta5"):
        from .driving import download_cyclegta5, download_gta5
        root = args.root or "datasets"
        path = download_gta5(root, map(int, args.parts or GTA5_PARTS)) if args.name == "gta5" else download_cyclegta5(root)
        print(f"downloaded to {path}\ntrain with: cyclelib train cycada --task segmentation --source gta5:{path} "
              f"--target cityscapes:DIR (cyclelib download cityscapes says how to get DIR)")
    elif args.name in RELEASE_MODELS:
        path, stage = download_release_model(args.name, args.root), RELEASE_MODELS[args.name].stage
        print(f"downloaded to {path}\nuse as the {stage} stage: cyclelib train cycada --task segmentation --classifier "
              f"drn26 --source gta5:DIR --target cityscapes:DIR --stage-weights {stage}={path}")
    elif args.name in DIGIT_DOMAINS:
        print(f"{args.name} ships with cyclelib: nothing to download (train with --data {args.name}:...)")
    else:
        hint = "; it is a pretrained model: add --pretrained" if args.name in PRETRAINED_MODELS else ""
        raise ValueError(f"download: unknown dataset {args.name!r}{hint}; valid values: "
                         f"{', '.join((*CYCLEGAN_DATASETS, 'cityscapes', *DIGIT_DOMAINS, 'gta5', 'cyclegta5', *RELEASE_MODELS))} "
                         f"(pretrained models with --pretrained: {', '.join(PRETRAINED_MODELS)})")


def download_listing() -> str:
    """What ``cyclelib download`` accepts, in groups, one name a line (what ``--list`` prints)."""
    def group(title, lines):
        return "\n".join([title, *(f"  {line}" for line in lines)])

    return "\n\n".join([
        group("CycleGAN datasets (into ./datasets or --root; sizes not stated by the official pages):",
              [*CYCLEGAN_DATASETS, "cityscapes  (manual download: its licence allows no redistribution; steps printed, for the pair and "
               "for segmentation)"]),
        group("digit domains (into $CYCLELIB_DATA or ~/.cache/cyclelib, or --root):",
              [*DIGIT_FILES, *(f"{name}  (ships with cyclelib: nothing to download)"
                               for name in DIGIT_DOMAINS if name not in DIGIT_FILES)]),
        group("CyCADA segmentation sources, read as gta5:PATH (into ./datasets/NAME or --root/NAME; the target, "
              "cityscapes, is listed above):",
              ["gta5  (GTA5's images and labels; --parts N ... picks some of its parts 1 to 10, default all)",
               "cyclegta5  (the CyCADA release's GTA5 translated to look like Cityscapes, with GTA5's labels)"]),
        group("the CyCADA release's DRN-26 segmenters, each a CyCADA stage (into $CYCLELIB_CACHE or "
              "~/.cache/cyclelib/models, or --root, under cycada_release/; train cycada --stage-weights STAGE=FILE):",
              [f"{name}  ({model.stage} stage: {model.what})" for name, model in RELEASE_MODELS.items()]),
        group("pretrained CycleGAN generators, with --pretrained (into $CYCLELIB_CACHE or ~/.cache/cyclelib/models, "
              "or --root; sizes where recorded, else unknown until first download):",
              [f"{name}  ({PRETRAINED_SIZES[name] / 1e6:.1f} MB)" if name in PRETRAINED_SIZES else name
               for name in PRETRAINED_MODELS]),
    ])


def _add_generator_source(command: argparse.ArgumentParser, atob: str) -> None:
    """Which generator a command uses (translate, export): the file, the direction, its checksum."""
    command.add_argument("--checkpoint", required=True,
                         help="required: a run folder (its latest readable checkpoint), a cyclelib checkpoint.pt, "
                              "or an official generator .pth (e.g. horse2zebra.pth)")
    command.add_argument("--direction", **choice("direction", DIRECTIONS), default="AtoB",
                         help=f"AtoB {atob} (the run's G_A; its G_B if it was trained with --direction BtoA), "
                              "BtoA the other way (default: AtoB)")
    command.add_argument("--sha256", default=None,
                         help="the checkpoint's expected SHA-256: verify the file before loading it (files in "
                              "torch's legacy format have no checksum of their own)")


def _add_official_options(command: argparse.ArgumentParser) -> None:
    """How to build the generator of an official checkpoint (translate, test, export): the defaults
    are those of the published pretrained models."""
    official = command.add_argument_group("official checkpoints (ignored for cyclelib checkpoints)")
    add_arch_argument(official, "the generator")
    official.add_argument("--norm", default="instance", metavar=one_of(NORMS),
                          help="its normalisation; default: instance")
    official.add_argument("--input-nc", type=positive_int, default=3, help="its input channels; default: 3")
    official.add_argument("--output-nc", type=positive_int, default=3, help="its output channels; default: 3")
    official.add_argument("--width", type=positive_int, default=64, help="its width (ngf); default: 64")
    official.add_argument("--dropout", action="store_true", help="the generator has dropout layers "
                                                                 "(trained with the official --no_dropout off)")


# One parser tree for every command, in the order `--help` prints it; split up, a reader would
# have to jump between pieces to see one command's options, so it stays one function (only the
# options translate and test share are added by _add_translation_options).
class _Parser(argparse.ArgumentParser):
    """Usage errors of every command (subparsers are built of the same class) say "cyclelib: error:",
    as the errors of bad input found later do, and exit 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"cyclelib: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cyclelib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cyclelib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model").add_subparsers(dest="model", required=True)
    cyclegan = train.add_parser("cyclegan", help="unpaired image translation (Zhu et al. 2017)",
                                usage="%(prog)s (--data DATA | --resume DIR) [--scale SCALE] [options]")
    cyclegan.add_argument("--scale", **choice("scale", SCALES), default=None,
                          help="smoke (seconds), cpu (minutes), colab (a free Colab T4), gpu (paper); default: "
                               "$CYCLELIB_SCALE, else colab when CUDA is present, else cpu")
    refuse_official_options(cyclegan)
    cyclegan.add_argument("--resume", metavar="DIR",
                          help="continue the run in DIR exactly where it stopped; options given with it apply from "
                               "there (e.g. --lr, --n-epochs, --log-every), but those a run keeps for its life "
                               "(networks, data, loss) are refused")
    cyclegan.add_argument("--from-step", type=positive_int, metavar="N",
                          help="with --resume: go on from the run's checkpoint of step N (DIR/checkpoints/step_N.pt) "
                               "instead of its latest; the later steps are trained again: their step checkpoints are "
                               "deleted first, their history rows dropped, their sample grids replaced")
    cyclegan.add_argument("--overwrite", action="store_true",
                          help="start over in an --out that holds another run (its checkpoints, history and "
                               "samples are deleted)")
    add_config_options(cyclegan, CycleGANConfig, CYCLEGAN_PRESETS)
    cyclegan.set_defaults(run=_train_cyclegan)

    cycada = train.add_parser("cycada", help="domain adaptation on digits or, with --task segmentation, per pixel, "
                                             "stage by stage (Hoffman et al. 2018)",
                              usage="%(prog)s --source DOMAIN --target DOMAIN [--scale SCALE] [options]",
                              description="The pixel stage's options are CycleGAN's, with the source as domain A "
                                          "and the target as domain B.")
    cycada.add_argument("--scale", **choice("scale", SCALES), default=None,
                        help="smoke (seconds), cpu (every stage: 7 minutes for uci-digits -> mnist5k, 17 for "
                             "mnist5k -> mnistm5k, one thread of an AMD EPYC), colab (a free Colab T4), gpu (paper); "
                             "default: $CYCLELIB_SCALE, else colab when CUDA is present, else cpu")
    cycada.add_argument("--stages", default=",".join(CYCADA_STAGES),
                        help=f"comma-separated stages to run (default: all, {','.join(CYCADA_STAGES)}); finished "
                             "ones are skipped, earlier ones are loaded from --out")
    cycada.add_argument("--force", action="store_true", help="retrain the chosen stages even if finished")
    cycada.add_argument("--form", default="paper", metavar="{" + ",".join(CYCADA_FORMS) + "}",
                        help="paper (its equations) or release (the official code's choices where it departs: "
                             + "; ".join(f"{task}: " + ", ".join(f"{k} {v}" for k, v in choices.items())
                                         for task, choices in CYCADA_FORMS["release"].items())
                             + "); options given win; a scale keeps its learning rates: at the cpu scale add "
                             "--feature-lr 1e-5, the release's (the book, chapter 9); default: paper")
    add_config_options(cycada, CyCADAConfig, cycada_presets_by_kind(), skip=("scale",))
    cycada.set_defaults(run=_train_cycada)

    translate = commands.add_parser("translate", help="translate a folder of images with a trained generator")
    _add_generator_source(translate, "translates images like the data's A into B")
    translate.add_argument("--input", required=True, help="required: folder of images (searched recursively)")
    translate.add_argument("--output", required=True,
                           help="required: folder for the results (same relative names)")
    translate.add_argument("--overwrite", action="store_true",
                           help="allow an --output that is, contains or lies inside --input")
    translate.add_argument("--tile", type=positive_int, default=None,
                           help="translate each image in overlapping TILE x TILE tiles, blended (for photos too "
                                "large for memory: 4000x3000 needs about 2 GB with --tile 512, 11 GB whole)")
    translate.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring tiles (default: 64)")
    _add_translation_options(translate)
    translate.set_defaults(run=_translate)

    test = commands.add_parser("test", help="translate a dataset's test images both ways and write an index.html "
                                            "of real, fake and reconstructed images")
    test.add_argument("--checkpoint", help="a run folder (its latest readable checkpoint) or a cyclelib checkpoint")
    test.add_argument("--checkpoint-A", help="an official pair instead: the A -> B generator (latest_net_G_A.pth)")
    test.add_argument("--checkpoint-B", help="and the B -> A generator (latest_net_G_B.pth)")
    test.add_argument("--dataroot", required=True, help="required: the dataset folder, holding testA and testB")
    test.add_argument("--phase", default="test", help="the split: PHASEA and PHASEB are read (default: test)")
    test.add_argument("--results", required=True, help="required: folder for index.html and its images")
    test.add_argument("--num-test", type=positive_int, default=None,
                      help="the first NUM_TEST images of each split (default: all)")
    _add_translation_options(test)
    test.set_defaults(run=_test)

    evaluation = commands.add_parser("evaluate", help="FID and KID of a run's translations, or between two folders")
    evaluation.add_argument("--checkpoint", metavar="RUN_OR_CKPT",
                            help="a run folder or checkpoint.pt whose generator translates --data")
    evaluation.add_argument("--data", metavar="DATASET",
                            help="the dataset folder (testA/testB) or digit pair (mnist5k:mnistm5k)")
    evaluation.add_argument("--direction", **choice("direction", DIRECTIONS), default="AtoB",
                            help="AtoB translates <phase>A and compares with <phase>B (default: AtoB)")
    evaluation.add_argument("--phase", **choice("phase", ("train", "test")), default="test",
                            help="the split whose images are translated and compared (default: test)")
    evaluation.add_argument("--oracle", metavar="CKPT", help="digits only: a CyCADA oracle stage checkpoint "
                            "(<out>/oracle/checkpoint.pt) for oracle accuracy and label preservation")
    evaluation.add_argument("--translations", metavar="DIR",
                            help="keep the translated images in this folder (default: a temporary one)")
    evaluation.add_argument("--fake", metavar="DIR",
                            help="a folder of generated images (instead of --checkpoint and --data)")
    evaluation.add_argument("--real", metavar="DIR", help="a folder of reference images")
    evaluation.add_argument("--json", metavar="FILE", help="where to write the result and its protocol (default: "
                            "evaluate_<direction>_<phase>.json beside the checkpoint, or ./evaluate.json for "
                            "--fake/--real)")
    evaluation.add_argument("--batch-size", type=int, default=50,
                            help="images per batch through the generator and Inception (default: 50)")
    evaluation.add_argument("--device", default=None, help="default: CUDA when present, else the CPU")
    evaluation.add_argument("--kid-subsets", type=int, default=KID_SUBSETS,
                            help=f"random subsets KID averages over (default: {KID_SUBSETS})")
    evaluation.add_argument("--kid-subset-size", type=int, default=None,
                            help="default: min(1000, number of images in the smaller set)")
    evaluation.set_defaults(run=_evaluate)
    export = commands.add_parser("export", help="write a generator as ONNX, TorchScript or safetensors, for use "
                                                "without cyclelib")
    _add_generator_source(export, "writes the generator of the data's A into B")
    export.add_argument("--format", **choice("export format", EXPORT_FORMATS), default="onnx",
                        help="onnx (default; dynamic batch, height and width), torchscript (torch.jit.load; "
                             "deprecated by PyTorch), safetensors (the weights only)")
    export.add_argument("--output", required=True, help="required: the file to write")
    _add_official_options(export)
    export.set_defaults(run=_export)

    download = commands.add_parser("download", help="download a dataset or a pretrained model (needs the network)",
                                    epilog=download_listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    download.add_argument("name", nargs="?", help="a name listed below")
    download.add_argument("--pretrained", action="store_true",
                          help="NAME is an official pretrained CycleGAN generator (horse2zebra, style_monet, ...)")
    download.add_argument("--parts", nargs="+", **choice("GTA5 part", map(str, GTA5_PARTS)), default=None,
                          help="gta5 only: which of its parts (default: all ten)")
    download.add_argument("--list", action="store_true", help="list the names, in groups, and exit")
    download.add_argument("--root", default=None, help="where to put it (default: ./datasets for CycleGAN zips "
                                                       "and driving scenes, "
                                                       "$CYCLELIB_DATA or ~/.cache/cyclelib for digits, "
                                                       "$CYCLELIB_CACHE or ~/.cache/cyclelib/models for models)")
    download.set_defaults(run=_download)

    bench = commands.add_parser("bench", help="time the fast and the reference training step, and translation")
    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)
    return parser


def _bench(args) -> None:
    from .bench import run_and_report
    run_and_report(args)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except Exception as e:
        code, prefix = _failure(e)
        print(f"cyclelib: {prefix}{e}", file=sys.stderr)
        raise SystemExit(code) from None


def _failure(e: Exception) -> tuple[int, str]:
    """The exit code and message prefix of what a command raised, or ``e`` raised again (a bug: its
    traceback is wanted). The command imported the modules of these exceptions (and torch) already."""
    from .runs import RunFolderError
    from .train import TrainingDiverged, TrainingInterrupted
    if isinstance(e, (ValueError, FileNotFoundError, RunFolderError)):
        return 2, "error: "  # bad input is the user's to fix: say what is wrong, without a traceback
    if isinstance(e, (TrainingInterrupted, TrainingDiverged)):
        return e.exit_code, ""  # the run stopped with its checkpoints in order: the message says what to do next
    if isinstance(e, (OSError, DownloadError)):  # the machine's or network's to fix (a full disk, no connection):
        return 1, "error: "  # the message names the file and folder, or the URL and the reason
    raise e


if __name__ == "__main__":
    main()
