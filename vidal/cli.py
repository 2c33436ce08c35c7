"""`vidal`: one entry point, a sub-command per job. Config overrides go last as key=value."""

from __future__ import annotations

import argparse
import logging
import sys

from vidal.config import ConfigError, load_config
from vidal.io.sources import SourceError


def _common(parser: argparse.ArgumentParser, source_required: bool) -> None:
    parser.add_argument(
        "--source",
        required=source_required,
        help="folder of videos (optional .json/.txt sidecars) or a manifest "
        "(.parquet/.csv/.jsonl with url/path, title, hashtags)",
    )
    parser.add_argument("--out", required=True, help="output folder or fsspec URL")
    parser.add_argument(
        "--pipeline",
        default="vidal10m",
        help="pipeline name in pipelines/ or a YAML path (default: vidal10m)",
    )
    parser.add_argument("--shards", type=int, help="number of output shards (config: shards)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ray-address", help="Ray cluster to use: auto or ray://host:port")
    where.add_argument(
        "--processes",
        action="store_true",
        help="one machine without Ray: a pool of worker processes (runner.kind=processes)",
    )
    where.add_argument(
        "--ray",
        action="store_true",
        help="every pass on a Ray started on this machine (runner.kind=ray); by default only "
        "passes with model stages use Ray, the rest a pool of worker processes",
    )
    where.add_argument("--local", action="store_true", help="run in this process, without Ray")
    parser.add_argument("--retry-failed", action="store_true", help="rerun failed samples only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. keyframes.mode=snap clip.short_side=320",
    )


def _train_parsers(sub) -> None:
    train = sub.add_parser("train", help="contrastive training on the shards (LanguageBind recipe)")
    train.add_argument("--data", help="shard URLs: brace pattern or glob (config: train.shards)")
    train.add_argument("--modality", choices=["video", "depth", "infrared", "audio"])
    train.add_argument("--out", help="checkpoints, logs (config: train.out)")
    train.add_argument("--steps", type=int)
    train.add_argument("--held-out", help="shards for zero-shot retrieval after training")
    train.add_argument("--pipeline", default="vidal10m")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=1e-4")
    evaluate = sub.add_parser("eval", help="zero-shot retrieval / classification of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--data", help="held-out shards: text<->modality retrieval")
    evaluate.add_argument("--classify", help="folder/<label>/<files>: zero-shot classification")
    from vidal.io.commands import add_parsers as add_languagebind_parsers

    add_languagebind_parsers(sub)  # `vidal export`, `vidal import`


def _train_job(args) -> int:
    from vidal.train.run import print_summary, run_eval, run_train

    if args.command == "export" and args.format == "languagebind-model":
        if not args.checkpoint:
            raise ConfigError("export languagebind-model needs --checkpoint (a last.pt)")
        from vidal.train.languagebind import export

        print(export(args.checkpoint, args.to))
        return 0
    if args.command == "export" and not args.dataset:
        raise ConfigError("export languagebind needs --dataset (the build's output folder)")
    if args.command == "train":
        overrides = list(args.overrides)
        for flag, key in (
            ("data", "shards"),
            ("modality", "data.modality"),
            ("out", "out"),
            ("steps", "steps"),
        ):
            if getattr(args, flag) is not None:
                overrides.append(f"train.{key}={getattr(args, flag)}")
        from vidal.train.recipes import train_config

        config = train_config(args.pipeline, overrides)
        if not config.shards:
            raise ConfigError("no shards to train on: pass --data 'OUT/shards/vidal-*.tar'")
        print_summary(run_train(config, args.held_out))
        return 0
    if args.command == "eval":
        print_summary(run_eval(args.checkpoint, args.data, args.classify))
        return 0
    from vidal.io.commands import dispatch as languagebind_dispatch

    return languagebind_dispatch(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidal", description="Build VIDAL-style multi-modal datasets.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="run every missing stage, then pack the shards")
    _common(build, source_required=True)
    run = sub.add_parser("run", help="run one stage (and the stages it needs) over a dataset")
    run.add_argument("stage")
    _common(run, source_required=False)
    demo = sub.add_parser("demo", help="offline demo: sample videos -> stages -> shards")
    demo.add_argument("--out", default="demo-out")
    demo.add_argument("--synthetic", type=int, default=48, help="generated captioned clips")
    demo.add_argument("--local", action="store_true", help="run without Ray")
    demo.add_argument("--force", action="store_true", help="use a folder the demo did not make")
    refilter = sub.add_parser("refilter", help="re-decide the VL filter from the stored scores")
    refilter.add_argument("--out", required=True, help="the built dataset")
    refilter.add_argument("--pipeline", default="vidal10m", help="the pipeline the build used")
    rule = refilter.add_mutually_exclusive_group(required=True)
    rule.add_argument("--threshold", type=float, help="keep clips whose score is at least this")
    rule.add_argument("--top-fraction", type=float, help="keep this best fraction per term")
    refilter.add_argument("overrides", nargs="*", metavar="key=value")
    dedup = sub.add_parser("dedup", help="drop near-duplicate clips (stored VL embeddings)")
    dedup.add_argument("--out", required=True, help="the built dataset")
    dedup.add_argument("--pipeline", default="vidal10m", help="the pipeline the build used")
    dedup.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. dedup.threshold=0.9")
    report = sub.add_parser("report", help="a static HTML report of a built dataset")
    report.add_argument("--out", required=True, help="the built dataset")
    report.add_argument("--to", help="the HTML file to write (default: OUT/report.html)")
    report.add_argument("--samples", type=int, default=16, help="samples in the grid")
    report.add_argument("--seed", type=int, default=0, help="which random samples")
    report.add_argument("--max-tars", type=int, default=4, help="shards the grid reads")
    report.add_argument("--crawl", help="the crawl's output (crawl.json) for the funnel")
    _train_parsers(sub)
    from vidal.train.infrared import add_parser as add_infrared_parser

    add_infrared_parser(sub)  # `vidal train-infrared`
    from vidal.run.crawl import add_parsers as add_crawl_parsers

    add_crawl_parsers(sub)  # `vidal terms`, `vidal crawl`
    return p


def _config(args):
    overrides = list(args.overrides)
    if args.shards is not None:
        overrides.append(f"shards={args.shards}")
    if args.ray_address:
        overrides.append(f"runner.ray_address={args.ray_address}")
    if args.local:
        overrides.append("runner.kind=local")
    if args.processes:
        overrides.append("runner.kind=processes")
    if args.ray:
        overrides.append("runner.kind=ray")
    return load_config(args.pipeline, overrides)


def _parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting key=value overrides stand anywhere after the sub-command (argparse
    alone takes them only before the first option when the sub-command has a positional)."""
    args, extra = p.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        p.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(parser(), argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from vidal.run.diskfull import disk_full_sentence
    from vidal.run.lock import OutputLocked, lock_for_command

    try:
        with lock_for_command(args):  # one writer per output folder
            return _dispatch(args)
    except OutputLocked as exc:
        print(f"vidal: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, SourceError, FileNotFoundError) as exc:
        print(f"vidal: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidal: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a crash, not a bad sample: those never get here
        full = disk_full_sentence(exc, getattr(args, "out", None))
        if full:
            print(f"vidal: {args.command} failed: {full}", file=sys.stderr)
            return 1
        if args.verbose:
            raise
        print(
            f"vidal: {args.command} crashed: {type(exc).__name__}: {exc}. Finished work is "
            "kept; rerun the same command to resume (add -v for the traceback).",
            file=sys.stderr,
        )
        return 3


def _dispatch(args) -> int:
    from vidal.run import jobs

    if args.command == "demo":
        from vidal.demo import run_demo

        return run_demo(args.out, args.synthetic, local=args.local, force=args.force)
    if args.command == "train-infrared":
        from vidal.train.infrared import run as train_infrared

        return train_infrared(args)
    if args.command in ("train", "eval", "export", "import"):
        return _train_job(args)
    if args.command in ("terms", "crawl"):
        from vidal.run.crawl import dispatch as crawl_dispatch

        return crawl_dispatch(args)
    if args.command == "report":
        from vidal.report import write_report

        path = write_report(
            args.out, args.to, args.samples, args.seed, args.max_tars, crawl=args.crawl
        )
        print(f"report: {path}")
        return 0
    if args.command in ("dedup", "refilter"):
        config = load_config(args.pipeline, args.overrides)
        rule = {}
        if args.command == "refilter":
            rule = {"threshold": args.threshold, "top_fraction": args.top_fraction}
        outcome = jobs.redecide(config, args.out, args.command, **rule)
        if outcome.failure:
            print(f"vidal: {args.command} failed: {outcome.failure}", file=sys.stderr)
        return outcome.exit_code
    config = _config(args)
    if args.command == "build":
        outcome = jobs.build(config, args.source, args.out, args.retry_failed, args.quiet)
    else:
        outcome = jobs.run_stage(
            config, args.stage, args.source, args.out, args.retry_failed, args.quiet
        )
    if outcome.failure:
        print(f"vidal: {args.command} failed: {outcome.failure}", file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
