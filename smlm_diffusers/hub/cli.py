"""``python -m smlm_diffusers.hub card | push``: model cards and uploads from the command line.

    python -m smlm_diffusers.hub card pretrained/smlm-ddpm-2d --results benchmarks/results/results.csv
    python -m smlm_diffusers.hub push pretrained/smlm-ddpm-2d --repo-id ORG/NAME [--dry-run]
    python -m smlm_diffusers.hub push . --repo-id ORG/NAME --repo-type space [--dry-run]

``card`` renders the package's model card template (Jinja, ``ModelCard.from_template``) into
``<folder>/README.md``. ``push`` creates the repo and uploads the folder, leaving out training
checkpoints, pickles and caches, the curated model card (README.md) last. A Space push
(``--repo-type space``, the folder is the repository root) uploads only what the Space runs.
``--dry-run`` lists exactly the files that would be uploaded and touches nothing.
"""

from __future__ import annotations

import argparse

from .card import CARD_TEMPLATE, write_model_card
from .push import push_folder

# where benchmarks/run.py writes its table, relative to a clone (the card's how-to names it)
DEFAULT_RESULTS = "benchmarks/results/results.csv"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m smlm_diffusers.hub", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    card = sub.add_parser("card", help="(re)generate <folder>/README.md, the model card")
    card.add_argument("folder")
    card.add_argument("--results", default=None, help=f"the benchmark's results.csv (e.g. {DEFAULT_RESULTS})")
    card.add_argument("--repo-id", default=None, help="Hub repo id used in the loading examples")
    card.add_argument("--template", default=None, help=f"Jinja template (default {CARD_TEMPLATE})")
    card.add_argument("--out", default=None, help="write here instead of <folder>/README.md")
    push = sub.add_parser("push", help="upload a folder to a Hub repo")
    push.add_argument("folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--repo-type", default="model", choices=["model", "space", "dataset"])
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    push.add_argument("--results", default=None,
                      help="regenerate the model card with this results.csv (and --repo-id) before uploading")
    args = p.parse_args(argv)
    try:
        _run(args)
    except FileNotFoundError as err:  # a wrong path: say so, without a traceback
        p.exit(2, f"{p.prog} {args.command}: error: {err}\n")


def _run(args):
    if args.command == "card":
        out = write_model_card(args.folder, results=args.results, repo_id=args.repo_id, template=args.template,
                               out=args.out, results_hint=DEFAULT_RESULTS)
        print(f"wrote {out}")
        return
    if args.results and args.repo_type == "model" and not args.dry_run:
        write_model_card(args.folder, results=args.results, repo_id=args.repo_id, results_hint=DEFAULT_RESULTS)
    files = push_folder(args.folder, args.repo_id, args.repo_type, args.private, dry_run=args.dry_run,
                        results=args.results)
    print(("would upload" if args.dry_run else "uploaded") + f" {len(files)} files to {args.repo_id}"
          + (f" ({args.repo_type})" if args.repo_type != "model" else "") + ":")
    for f in files:
        print("  " + f)
