"""`lumbar-node` command line.

Subcommands are looked up in a table and their module is imported only when that command
runs, so `lumbar-node serve` never loads torch or `models/` and starts in well under a
second, while `lumbar-node analyze` brings the imaging stack along.

Each command module exposes ``configure(parser)`` to add its arguments and ``run(args)``
returning the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("models.synth.cli", "write a synthetic lumbar MR study with ground truth"),
    "analyze": ("models.analyze_cli", "run the imaging pipeline on a folder of DICOM files"),
    "models": ("models.registry_cli", "list registered models and their metrics"),
    "train": ("models.train_cli", "train the segmentation network or the learned grader"),
    "evaluate": ("models.discs.evaluate", "run a model on a folder of real images, score it"),
    "serve": ("dicom_node.serve", "run the DICOM C-STORE SCP and the HTTP server"),
    "worker": ("workers.worker_cli", "run a Celery worker (GPU or delivery queue)"),
    "db": ("dicom_node.db_cli", "database schema commands (upgrade, current, check)"),
    "audit": ("dicom_node.audit_cli", "query the audit trail"),
    "resend": ("dicom_node.resend_cli", "queue results of a study for delivery again"),
    "pull": ("dicom_node.pull_cli", "fetch a study from a PACS by DICOMweb and process it"),
    "users": ("dicom_node.users_cli", "add or list review console users"),
    "feedback": ("dicom_node.feedback_cli", "export radiologists' reviews as labels"),
    "demo": ("workers.demo", "run node and worker locally on a synthetic study, end to end"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lumbar-node",
        description="Radiology AI node for lumbar spine MRI.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        _top_parser().parse_args([name])  # prints the usage error and exits 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"lumbar-node {name}", description=help_)
    module.configure(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
