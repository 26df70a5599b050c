"""`lumbar-node worker`: a Celery worker for the GPU queue, the I/O queue, or both.

Run one worker per GPU (`--queues gpu --concurrency 1`, CUDA_VISIBLE_DEVICES picking the
card): the segmentation model is loaded once per process and a second process on the same
card would only compete for its memory. Delivery and housekeeping (`--queues io --beat`)
are light and can run anywhere.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queues", default="gpu,io", help="comma-separated (default gpu,io)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--pool", default="solo", choices=("solo", "prefork", "threads"),
                        help="solo (default) runs tasks in the worker process itself")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--beat", action="store_true",
                        help="also run the periodic outbox relay and reconciler")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--hostname", default=None, help="Celery node name")


def run(args: argparse.Namespace) -> int:
    import logging

    from dicom_node.config import load_config
    from workers.celery_app import create_app

    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config()
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - {"gpu", "io"}
    if not queues or unknown:
        raise ValueError(f"--queues must name gpu and/or io, got {args.queues!r}")
    app = create_app(config, device=args.device, preload_models="gpu" in queues)
    if "gpu" in queues and args.pool != "prefork":
        app.lumbar_runtime.segmenter()  # type: ignore[attr-defined]  # load once, up front
    argv = ["worker", "-Q", args.queues, "-c", str(args.concurrency), "-P", args.pool,
            "--loglevel", args.loglevel, "--without-gossip", "--without-mingle"]
    if args.hostname:
        argv += ["-n", args.hostname]
    if args.beat:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["-B", "-s", str(config.data_dir / "celerybeat-schedule")]
    app.worker_main(argv)
    return 0
