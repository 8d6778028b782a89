"""`hfpref annotate`: run a listening test in the browser, export its answers as a preference dataset, report them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_annotate_parser(subparsers) -> argparse.ArgumentParser:
    """Register `hfpref annotate`."""
    p = subparsers.add_parser(
        "annotate",
        help="collect human preferences on audio in a local web app; export them as a preference dataset",
        description="Starts a listening-test app on 127.0.0.1 (several annotators: /?annotator=NAME). Answers are "
        "stored durably under --output-dir; restarting with the same --output-dir resumes. --export writes the "
        "preference dataset (<output-dir>/dataset), --report prints vote counts, ties and Fleiss' kappa.",
    )
    p.add_argument("--task", choices=["pairwise", "binary"], help="two captions per clip, or one text per clip")
    p.add_argument(
        "--items",
        help="hfpref pairs output, tta-generate's feedback.csv (or its folder), the quickstart's preference-judgments "
        "or evaluation.jsonl, or any dataset with the texts to judge; leave out to resume --output-dir",
    )
    p.add_argument("--output-dir", required=True, help="the session folder: items, answers, exported dataset")
    p.add_argument("--annotator", default=None, help="name the page starts with (others: /?annotator=NAME)")
    p.add_argument("--audio-dataset", default=None, help="the clips (clip_id + audio) when --items has no audio")
    p.add_argument("--audio-column", default="audio", help="audio column of --items or --audio-dataset")
    p.add_argument(
        "--audio-split", default=None, help="split of --audio-dataset (default: all by clip_id, train by row)"
    )
    p.add_argument("--caption-columns", nargs="+", default=None, help="the caption column(s) to judge")
    p.add_argument("--split", default=None, help="split of --items (default: all)")
    p.add_argument("--split-column", default=None, help="column whose values the report gives kappa for")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the per-annotator item and caption orders (kept by the session)"
    )
    p.add_argument(
        "--audio-root",
        default=None,
        help="folder the items' audio files must be under (default: the folder of --items, or of --audio-dataset "
        "when the clips come from it)",
    )
    p.add_argument(
        "--allow-audio-outside",
        action="store_true",
        help="take audio files from anywhere (they are still decoded first); by default files outside --audio-root "
        "are refused, since the session copies them and the export publishes them",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page may be reached by besides localhost, 127.0.0.1 and --host (repeatable), e.g. the "
        "machine's name for annotators on the LAN; requests naming other hosts are refused (DNS rebinding)",
    )
    p.add_argument("--open-browser", action="store_true", help="open the page in the default browser")
    p.add_argument("--export", action="store_true", help="write <output-dir>/dataset from the answers and exit")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="export and push to this Hub dataset repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: a private repository")
    p.add_argument("--license", default=None, help="with --push-to-hub: Hub license id of the dataset card")
    p.add_argument("--report", action="store_true", help="print vote counts, ties, Fleiss' kappa and exit")
    p.add_argument("--json", action="store_true", help="with --report: print JSON instead of Markdown")
    p.set_defaults(func=cmd_annotate)
    return p


def cmd_annotate(args) -> int:
    from ..annotate.storage import Session

    output_dir = Path(args.output_dir)
    if args.export or args.push_to_hub or args.report:
        if args.items:
            raise SystemExit("hfpref annotate: --export and --report read --output-dir only; leave out --items.")
        if args.export or args.push_to_hub:
            from ..annotate.export import export_annotations

            dataset, stats = export_annotations(
                output_dir, push_to_hub=args.push_to_hub, private=args.private, license=args.license
            )
            where = f" and pushed to {args.push_to_hub}" if args.push_to_hub else ""
            print(f"Exported {len(dataset)} rows to {output_dir / 'dataset'}{where}: {json.dumps(stats)}")
        if args.report:
            from ..annotate.report import annotation_report, render_report_markdown

            report = annotation_report(output_dir)
            (output_dir / "report.json").write_text(json.dumps(report, indent=2))
            markdown = render_report_markdown(report)
            (output_dir / "report.md").write_text(markdown)
            print(json.dumps(report, indent=2) if args.json else markdown)
        return 0

    from ..annotate.app import serve

    if args.items:
        from ..annotate.items import load_items

        if args.task is None:
            raise SystemExit("hfpref annotate: --items needs --task pairwise or --task binary.")
        items, counts = load_items(
            args.items,
            args.task,
            audio_dataset=args.audio_dataset,
            audio_column=args.audio_column,
            audio_split=args.audio_split,
            caption_columns=args.caption_columns,
            split=args.split,
            split_column=args.split_column,
            audio_root=args.audio_root,
            allow_audio_outside=args.allow_audio_outside,
        )
        settings = {
            "task": args.task,
            "items": str(args.items),
            "audio_dataset": args.audio_dataset,
            "seed": args.seed,
        }
        settings.update(counts)
        session = Session.create(output_dir, settings, items)
        print(f"{len(session.items)} items from {args.items} ({json.dumps(counts)})")
    else:
        if args.audio_root or args.allow_audio_outside:
            raise SystemExit("hfpref annotate: --audio-root and --allow-audio-outside apply to --items only.")
        session = Session.open(output_dir)
        if args.task is not None and args.task != session.task:
            raise SystemExit(f"hfpref annotate: {output_dir} holds a {session.task} session, not {args.task}.")
    serve(
        output_dir,
        annotator=args.annotator,
        host=args.host,
        port=args.port,
        open_browser=args.open_browser,
        allowed_host=args.allowed_host,
    )
    return 0
