"""`vidal export languagebind|languagebind-wds` and `vidal import languagebind`."""

from __future__ import annotations

import glob
import json
import sys


def add_parsers(sub) -> None:
    export = sub.add_parser(
        "export", help="write a dataset (or a trained checkpoint) in another tool's layout"
    )
    export.add_argument(
        "format",
        choices=["languagebind", "languagebind-wds", "languagebind-model"],
        help="languagebind: VAT_dataset's folders; languagebind-wds: new_loadvat.py's shards; "
        "languagebind-model: a trained checkpoint as LanguageBind's model layout",
    )
    export.add_argument("--dataset", help="the build's output folder (languagebind, -wds)")
    export.add_argument("--checkpoint", help="a vidal train checkpoint (languagebind-model)")
    export.add_argument("--to", required=True, help="destination folder")
    export.add_argument("--folder", default="vidal", help="LanguageBind's `folder` name")
    export.add_argument(
        "--upstream",
        default="7070c53",
        choices=["7070c53", "148c444"],
        help="LanguageBind version whose paths to write (148c444: the Nov 2023 layout)",
    )
    export.add_argument(
        "--ids",
        default="key",
        choices=["key", "youtube"],
        help="languagebind: the id of each sample: its key, or the imported YouTube id",
    )
    export.add_argument(
        "--relative-depth",
        metavar="NEAR,FAR",
        help="convert relative depth to mm: the clip's nearest point at NEAR m, farthest at FAR",
    )
    export.add_argument(
        "--require",
        default="",
        help="languagebind-wds: leave out samples without these (comma list: depth,thermal)",
    )
    imp = sub.add_parser("import", help="turn another tool's release into a manifest")
    imp.add_argument("format", choices=["languagebind"])
    imp.add_argument(
        "--annotations",
        required=True,
        help="LanguageBind's released JSON (id -> folder, raw, ofa, mplug, ...)",
    )
    imp.add_argument("--out", default="languagebind.parquet", help="the manifest to write")


def dispatch(args) -> int:
    from vidal.io.languagebind import ExportError
    from vidal.io.languagebind_import import ReleaseError

    try:
        report = _run(args)
    except (ExportError, ReleaseError) as exc:
        print(f"vidal: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


def _run(args) -> dict:
    if args.command == "import":
        from vidal.io.languagebind_import import import_languagebind

        return import_languagebind(args.annotations, args.out)
    shards = sorted(glob.glob(f"{glob.escape(args.dataset)}/shards/vidal-*.tar"))
    if not shards:
        raise FileNotFoundError(f"no shards under {args.dataset}/shards/")
    if args.format == "languagebind-wds":
        from vidal.io.languagebind_wds import export_languagebind_wds

        require = tuple(m for m in args.require.split(",") if m)
        return export_languagebind_wds(shards, args.to, require, args.relative_depth)
    from vidal.io.export import export_languagebind

    return export_languagebind(
        shards, args.to, args.folder, args.upstream, args.relative_depth, args.ids
    )
