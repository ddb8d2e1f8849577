"""The `xtlunet` console script: parses arguments, calls a stage, prints. No stage logic here."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from xtlunet.cli_types import (MOMENTUM, PROPER_FRACTION, STEP, add_model_options, fold_or_all, non_negative_int,
                               positive_float, positive_int)
from xtlunet.errors import XtlunetError, noun, os_error_to_user_error, plural

if TYPE_CHECKING:
    from xtlunet.training.run_spec import RunSpec

log = logging.getLogger("xtlunet")
Handler = Callable[[argparse.Namespace], None]


def _cmd_example(a: argparse.Namespace) -> None:
    """xtlunet example NAME."""
    from xtlunet.dataset.examples import make_example
    from xtlunet.paths import raw_root

    out = Path(a.out) if a.out else raw_root()
    folder = make_example(a.name, out, cases=a.cases, seed=a.seed, test_cases=a.test_cases)
    print(f"wrote {folder}")


def _cmd_plan(a: argparse.Namespace) -> None:
    """xtlunet plan-and-preprocess."""
    from xtlunet.plan_and_preprocess import plan_and_preprocess, plans_summary
    from xtlunet.utils.sharding import make_part

    part = make_part(a.num_parts, a.part_id)
    plans = plan_and_preprocess(a.d, a.c, a.pl, a.pretrained, a.gpu_memory_gb, a.verify, a.np, a.overwrite,
                                a.plans_name, preprocess=not a.no_pp, reorient=a.reorient,
                                transfer_norm=a.transfer_norm, part=part)
    print(plans_summary(plans))


def _cmd_pretrain(a: argparse.Namespace) -> None:
    """xtlunet pretrain-2d."""
    from xtlunet.dataset.spec import find_dataset
    from xtlunet.paths import raw_root
    from xtlunet.trainers.pretrain2d import PretrainConfig, Pretrainer2D

    out = Path(a.o)
    if out.is_dir():
        raise XtlunetError("-o must be a file path, not a folder", path=out, fix="e.g. -o mammo_resnet18.pth")
    cfg = PretrainConfig(dataset_root=find_dataset(a.d, raw_root()), arch=a.arch, output=out, task=a.task,
                         init=Path(a.init) if a.init else None, budget=a.budget, epochs=a.epochs,
                         iters_per_epoch=a.iters_per_epoch, batch_size=a.batch_size, input_size=a.input_size,
                         max_side=a.max_side, lr=a.lr, momentum=a.momentum, patience=a.patience,
                         val_fraction=a.val_fraction, device=a.device, seed=a.seed, num_workers=a.np)
    prov = Pretrainer2D(cfg).run()
    print(f"wrote {out}: {prov['metric']} final {prov['final_metric']:.3f}, best {prov['best_metric']:.3f} "
          f"after {prov['epochs']} epochs × {prov['iters_per_epoch']} iterations")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    """Arguments of `pretrain-2d`."""
    p = sub.add_parser("pretrain-2d", help="train a 2D network on mammograms (or any 2D images) for XTL")
    p.add_argument("-d", required=True, help="2D dataset id or name")
    p.add_argument("--arch", default="resnet18", help="plain | resnet18 | resnet34 | resnet50 | vgg16_bn")
    p.add_argument("--task", default="classification", help="classification (whole-image labels) or segmentation")
    p.add_argument("--init", default=None, help="local torchvision-format state dict to start from (e.g. ImageNet)")
    p.add_argument("--budget", default="full", help="full (a few thousand mammograms: 100 epochs × 250 "
                   "iterations, images up to 512 px, early stopping after 15 epochs without a better validation "
                   "metric) | tiny (tests, demo); the options below override it")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--iters-per-epoch", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--input-size", type=positive_int, nargs=2, default=None,
                   help="H W (default: planned from the images)")
    p.add_argument("--max-side", type=positive_int, default=None, help="longer side of the planned input size")
    p.add_argument("--lr", type=positive_float, default=1e-2, help="learning rate (an --init encoder learns at "
                   "0.1× it)")
    p.add_argument("--momentum", type=MOMENTUM, default=None, help="SGD momentum in [0, 1) (default 0.99; 0.9 "
                   "with --init)")
    p.add_argument("--patience", type=positive_int, default=None, help="early stopping: epochs without a better "
                   "validation metric (default from the budget; none when --epochs is given)")
    p.add_argument("--val-fraction", type=PROPER_FRACTION, default=0.2, help="share of the images (by patient) "
                   "held out for validation, in (0, 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("-np", type=positive_int, default=1, help="worker processes for loading images")
    p.add_argument("-o", required=True, help="output checkpoint (.pth)")
    p.set_defaults(func=_cmd_pretrain)


def _cmd_train(a: argparse.Namespace) -> None:
    """xtlunet train."""
    import dataclasses

    from xtlunet.launch import train_fold

    run = dataclasses.replace(_run_spec(a, a.dataset, a.configuration, a.fold), plans_name=a.p,
                              pretrained=Path(a.pretrained) if a.pretrained else None, save_every=a.save_every,
                              continue_training=a.c, compile=a.compile, final_validation=not a.no_final_validation,
                              val_probabilities=not a.no_val_probabilities, previous_trainer=a.previous_trainer)
    result = train_fold(a.tr, run)
    if result:
        from xtlunet.evaluation.summary import ValidationSummary

        print(f"fold {run.fold} of {a.tr}: {ValidationSummary.from_json(result).one_line()}")


def _run_spec(a: argparse.Namespace, dataset: str, configuration: str, fold: int | str) -> RunSpec:
    """The per-fold budget and options shared by `train` and `experiment`."""
    from xtlunet.training.run_spec import RunSpec

    return RunSpec(dataset=dataset, configuration=configuration, fold=fold, transfer_mode=a.transfer_mode,
                   epochs=a.epochs, iters_per_epoch=a.iters_per_epoch, val_iters=a.val_iters, device=a.device,
                   num_gpus=a.num_gpus, seed=a.seed, validation_tta=not a.val_no_tta)


def _add_budget(p: argparse.ArgumentParser) -> None:
    """The training budget and device options of `train` and `experiment`."""
    p.add_argument("--transfer-mode", default="inflate", help="inflate | center | acs (2D→3D kernel conversion)")
    p.add_argument("--epochs", type=positive_int, default=1000)
    p.add_argument("--iters-per-epoch", type=positive_int, default=250)
    p.add_argument("--val-iters", type=positive_int, default=50, help="validation batches per epoch (segmentation)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--num-gpus", type=positive_int, default=1, help="processes for DDP (gloo on CPU, nccl on CUDA)")
    p.add_argument("--seed", type=non_negative_int, default=12345)
    p.add_argument("--val-no-tta", action="store_true", help="final validation without mirroring (2^dim× faster)")


def _cmd_experiment(a: argparse.Namespace) -> None:
    """xtlunet experiment."""
    from xtlunet.experiment import ExperimentSpec, parse_folds, run_experiment

    spec = ExperimentSpec(dataset=a.d, configuration=a.c, arms=a.arms,
                          tl_weights=Path(a.tl_weights) if a.tl_weights else None,
                          xtl_weights=Path(a.xtl_weights) if a.xtl_weights else None, folds=parse_folds(a.folds),
                          gpu_memory_gb=a.gpu_memory_gb, plans_name=a.plans_name, num_workers=a.np,
                          transfer_norm=a.transfer_norm, run=_run_spec(a, a.d, a.c, 0))
    doc = run_experiment(spec)
    for arm in doc["arms"]:
        print(f"{arm['trainer']:<16} chain {arm['chain']}: " + "; ".join(
            f"fold {k} {v['line']}" for k, v in arm["folds"].items()))
    print("wrote " + ", ".join(doc["comparison"] or ["experiment record"]))


def _add_transfer_norm(p: argparse.ArgumentParser) -> None:
    """--transfer-norm, of plan-and-preprocess and experiment."""
    p.add_argument("--transfer-norm", choices=("instance", "batch"), default=None,
                   help="normalisation of a transferred (XTL-planned) encoder: instance (default) or batch, which "
                        "keeps the 2D source's running statistics")


def _add_experiment(sub: argparse._SubParsersAction) -> None:
    """Arguments of `experiment`."""
    p = sub.add_parser("experiment", help="the XTL protocol in one resumable command: one plan, every arm × fold, "
                       "compare, experiment.json")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration (e.g. 3d_fullres, 3d_roi)")
    p.add_argument("--arms", nargs="+", default=["ScratchTrainer", "TLTrainer", "XTLTrainer"],
                   help="trainers to compare (default: ScratchTrainer TLTrainer XTLTrainer)")
    p.add_argument("--tl-weights", default=None, help="natural-image 2D weights (torchvision state dict) for TL")
    p.add_argument("--xtl-weights", default=None, help="pretrain-2d mammogram checkpoint for XTL (plans the network)")
    p.add_argument("--folds", nargs="+", default=None, help="folds to run (default: all)")
    p.add_argument("--gpu-memory-gb", type=positive_float, default=8.0, help="GPU memory the plan must fit "
                   "(default 8)")
    p.add_argument("--plans-name", default=None, help="name of the shared plans (default from the planner)")
    _add_transfer_norm(p)
    p.add_argument("-np", type=positive_int, default=1, help="worker processes for preprocessing")
    _add_budget(p)
    p.set_defaults(func=_cmd_experiment)


def _add_train(sub: argparse._SubParsersAction) -> None:
    """Arguments of `train`."""
    from xtlunet.paths import NUM_FOLDS
    from xtlunet.plans import DEFAULT_PLANS

    folds = f"0–{NUM_FOLDS - 1} or all"
    p = sub.add_parser("train", help=f"train one fold ({folds}) of a configuration with a trainer (arm)")
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("configuration", help="2d | 3d_fullres | 3d_lowres | 3d_roi")
    p.add_argument("fold", type=fold_or_all, help=folds)
    p.add_argument("-tr", default="ScratchTrainer", help="trainer class: ScratchTrainer, TLTrainer, XTLTrainer, "
                   "or module.path:Class")
    p.add_argument("-p", default=DEFAULT_PLANS, help=f"plans name (default {DEFAULT_PLANS})")
    p.add_argument("--pretrained", default=None, help="2D weights for TL (torchvision) / XTL (pretrain-2d; default: "
                   "the checkpoint an XTL plan was made for)")
    _add_budget(p)
    p.add_argument("--save-every", type=positive_int, default=5, help="write checkpoint_latest every N epochs")
    p.add_argument("--continue", dest="c", action="store_true", help="resume from the fold's last checkpoint")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--no-final-validation", action="store_true", help="skip predicting the held-out cases")
    p.add_argument("--no-val-probabilities", action="store_true", help="final validation writes no CASE.npz "
                   "probabilities (less disk; find-best-configuration then leaves the model out of ensembles)")
    p.add_argument("--previous-trainer", default=None, metavar="TRAINER", help="3d_cascade_fullres only: follow "
                   "this trainer's 3d_lowres model (default: the -tr trainer's)")
    p.set_defaults(func=_cmd_train)


def _cmd_predict(a: argparse.Namespace) -> None:
    """xtlunet predict."""
    from xtlunet.dataset.spec import find_dataset
    from xtlunet.inference.folder import PredictOptions, predict_folder
    from xtlunet.inference.models import available_folds, load_trained_model, resolve_model_folder
    from xtlunet.paths import results_root
    from xtlunet.utils.device import pick_device
    from xtlunet.utils.sharding import make_part

    part = make_part(a.num_parts, a.part_id)
    results = results_root()
    name = find_dataset(a.d, results).name
    folder = resolve_model_folder(results, name, a.c, a.tr, a.p)
    folds = [str(f) for f in a.f] if a.f else available_folds(folder, a.checkpoint)
    if not folds:
        raise XtlunetError(f"no fold of {folder.name} has checkpoint_{a.checkpoint}.pth", path=folder,
                           fix=f"train at least one fold: xtlunet train {name} {a.c} 0 -tr {a.tr}")
    device = pick_device(a.device)
    model = load_trained_model(folder, folds, a.checkpoint, device)
    opts = PredictOptions(step=a.step_size, batch_windows=a.batch_windows, tta=not a.no_tta,
                          save_probabilities=a.save_probabilities, num_workers=a.npp, overwrite=a.overwrite,
                          device=device, findings=Path(a.findings) if a.findings else None, part=part,
                          precision=a.precision, tta_axes=a.tta_axes, empty_windows=a.empty_windows,
                          overlap=not a.no_overlap, compile=a.compile, channels_last=not a.no_channels_last)
    res = predict_folder(Path(a.i), Path(a.o), model, opts)
    of_part = "" if part.is_whole else f"of {part.label} "
    print(f"{plural(len(res.written), 'case')} {of_part}predicted with {noun(len(model.folds), 'fold')} "
          f"{', '.join(model.folds)} of {folder.name} into {a.o}"
          + (f"; {len(res.skipped)} already there (use --overwrite to redo)" if res.skipped else "")
          + (f"; {plural(len(res.unused), 'input file')} not used (named above)" if res.unused else ""))
    if a.qc is not None:
        from xtlunet.report.qc import prediction_qc

        print(prediction_qc(Path(a.i), Path(a.o), model, res.written + res.skipped, a.qc or None))
    if res.failed:
        raise XtlunetError(f"{plural(len(res.failed), 'case')} failed: {', '.join(sorted(res.failed))} "
                           "(reasons above)", fix="fix those inputs and run again; finished cases are kept")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    """Arguments of `predict`."""
    from xtlunet.report.cli import qc_reference

    p = sub.add_parser("predict", help="predict a folder of new cases with a trained model (fold ensemble)")
    p.add_argument("-i", required=True, help="input folder, files named as in imagesTs (CASE_0000.nii.gz, ...)")
    p.add_argument("-o", required=True, help="output folder")
    add_model_options(p, "folds to ensemble (default: every finished fold)")
    p.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation")
    p.add_argument("--tta-axes", nargs="+", type=non_negative_int, default=None, metavar="AXIS",
                   help="mirror only these of the trained mirror axes (e.g. --tta-axes 1 2: 4 passes per window, "
                   "not 8; default: every trained axis)")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16; auto: bf16 autocast on a GPU with "
                   "bf16 and on a CPU with native bf16 (amx_bf16/avx512_bf16), else fp32 (default auto)")
    p.add_argument("--empty-windows", default="reuse", help="reuse | skip | run: windows whose input is constant "
                   "(e.g. all zero outside the body): reuse = run once, reuse the result (exact; default); skip = not "
                   "run, background where no run window reaches (plans normalising inside the body mask only); run = "
                   "run every window")
    p.add_argument("--step-size", type=STEP, default=0.5, help="sliding-window step as a fraction of the patch, "
                   "in (0, 1]")
    p.add_argument("--batch-windows", type=positive_int, default=None, help="windows per forward pass (default: "
                   "chosen from the free memory, at most 8 and at most the case's windows)")
    p.add_argument("--save-probabilities", action="store_true", help="also write CASE.npz with probabilities")
    p.add_argument("-npp", type=positive_int, default=1, help="processes preprocessing ahead (1: a thread reads the "
                   "next case while the network runs)")
    p.add_argument("--no-overlap", action="store_true", help="one stage after another: no reading ahead, no export "
                   "while the network runs the next case (same outputs, slower)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (one window batch shape: "
                   "the last batch of a case is padded; pays off on a GPU over many cases)")
    p.add_argument("--no-channels-last", action="store_true", help="CUDA: keep the networks and windows in the "
                   "default memory layout instead of channels-last (channels_last_3d for 3D)")
    p.add_argument("--findings", default=None, help="classification: CSV of the findings to classify")
    p.add_argument("--overwrite", action="store_true", help="redo cases already predicted")
    p.add_argument("--qc", nargs="?", const="", default=None, type=qc_reference, metavar="LABELS",
                   help="also write OUT/qc/CASE.png: overlay montages of the prediction (and of the reference in the "
                   "folder LABELS, when given)")
    _add_parts(p, "predicts")
    p.set_defaults(func=_cmd_predict)


def _add_example(sub: argparse._SubParsersAction) -> None:
    """Arguments of `example`."""
    p = sub.add_parser("example", help="write a built-in synthetic dataset (brain-ms, prostate, mammo)")
    p.add_argument("name", help="brain-ms | prostate | mammo")
    p.add_argument("--out", help="raw root to write into (default: $XTLUNET_raw)")
    p.add_argument("--cases", type=positive_int, default=None, help="number of training cases (default: the "
                   "example's own)")
    p.add_argument("--test-cases", type=positive_int, default=None,
                   help="number of labelled test cases, for an example with a test set (brain-ms: 3)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=_cmd_example)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    """Arguments of `plan-and-preprocess`."""
    p = sub.add_parser("plan-and-preprocess", help="check, fingerprint, plan and preprocess a raw dataset")
    p.add_argument("-d", required=True, help="dataset id or name (e.g. 501 or Dataset501_BrainMS)")
    p.add_argument("-c", nargs="+", default=None, help="configurations (default: all that apply)")
    p.add_argument("-pl", default=None, help="planner class (default DefaultPlanner; XTLPlanner with --pretrained)")
    p.add_argument("--pretrained", default=None, help="pretrain-2d checkpoint or encoder family for the XTL planner")
    _add_transfer_norm(p)
    p.add_argument("--gpu-memory-gb", type=positive_float, default=8.0, help="GPU memory the plan must fit "
                   "(default 8)")
    p.add_argument("--plans-name", default=None, help="name of the plans file (default from the planner)")
    p.add_argument("--verify", action="store_true", help="full integrity check of every file and voxel")
    p.add_argument("-np", type=positive_int, default=1, help="worker processes")
    p.add_argument("--overwrite", action="store_true", help="redo the fingerprint and every case")
    p.add_argument("--no-pp", action="store_true", help="plan only, no preprocessing")
    p.add_argument("--reorient", action="store_true", help="bring every 3D case to its closest RAS+ axis order "
                   "(permutations and flips only, undone exactly at export; default: the files' voxel order)")
    _add_parts(p, "preprocesses (the fingerprint and plan are shared)")
    p.set_defaults(func=_cmd_plan)


def _add_parts(p: argparse.ArgumentParser, what: str) -> None:
    """--num-parts / --part-id, of plan-and-preprocess and predict (cluster job arrays)."""
    p.add_argument("--num-parts", type=positive_int, default=None, help="split the cases into N parts (sorted case "
                   "i goes to part i mod N), one per job of a job array; give --part-id too")
    p.add_argument("--part-id", type=non_negative_int, default=None, help=f"the part (0 … N−1) this run {what}, "
                   "e.g. $SLURM_ARRAY_TASK_ID")


COMMANDS = [_add_example, _add_plan, _add_pretrain, _add_train, _add_experiment, _add_predict]


def _commands() -> list:
    """Every subcommand's registration function (analysis commands live in cli_analysis, model sharing in
    cli_model, the after-training workflow in cli_workflow)."""
    from xtlunet import cli_analysis, cli_model, cli_workflow

    return [*COMMANDS, *cli_analysis.COMMANDS, *cli_model.COMMANDS, *cli_workflow.COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="xtlunet", description="Self-configuring 3D segmentation and lesion "
                                     "classification with cross-organ transfer learning from 2D mammograms.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _commands():
        add(sub)
    return parser


def _fail(command: str, err: XtlunetError) -> int:
    """Print a user error (its details, then one line) and return exit code 2."""
    for line in err.details:
        print(f"  {line}", file=sys.stderr)
    print(f"xtlunet {command}: error: {err.one_line()}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors and file-system faults print one line and return 2."""
    from xtlunet.utils.console import quiet_mode, setup_logging

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0), or argparse's one-line error for a bad option (2)
        return done.code if isinstance(done.code, int) else 2
    setup_logging(args.quiet)
    with quiet_mode(args.quiet):
        try:
            args.func(args)
        except XtlunetError as err:
            return _fail(args.command, err)
        except OSError as exc:  # disk full, read-only, a file where a folder must be; anything else is a bug
            err = os_error_to_user_error(exc)
            if err is None:
                raise
            return _fail(args.command, err)
        except KeyboardInterrupt:
            print(f"xtlunet {args.command}: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
