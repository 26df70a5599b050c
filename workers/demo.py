"""`lumbar-node demo`: the whole node on one machine with no server to install.

SQLite and the filesystem broker under a temporary folder; the node (SCP, HTTP, scheduler)
runs in this process, a Celery worker in a child process; a synthetic study is sent over
C-STORE as a PACS would, and a built-in receiving AE collects the SR, SEG and key image
the node sends back.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEMO_PACS = "DEMOPACS"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for results (default out/demo)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic study seed")
    parser.add_argument("--data-dir", help="node data folder (default: OUT/node, beside the "
                        "results, so nothing patient-like is left elsewhere)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _receiver(folder: Path, port: int) -> Any:
    """The PACS side: a C-STORE SCP that writes what the node returns."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    folder.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        (folder / f"{uid}.dcm").write_bytes(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title=DEMO_PACS)
    ae.supported_contexts = AllStoragePresentationContexts
    return ae.start_server(("127.0.0.1", port), block=False,
                           evt_handlers=[(evt.EVT_C_STORE, on_store)])


def _send(files: list[Path], port: int, called: str) -> int:
    """C-STORE every file on one association, like a PACS forwarding a study."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=DEMO_PACS)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise RuntimeError("the node refused the demo PACS association")
    ok = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            ok += int(bool(status) and status.Status == 0)
    finally:
        assoc.release()
    return ok


def run(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from dicom_node.config import load_config
    from dicom_node.db import migrate
    from dicom_node.db.models import Delivery, Finding, Job, ResultObject, Study
    from dicom_node.serve import Node
    from models.synth import generate_study
    from workers.env import config_env

    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data_dir = Path(args.data_dir) if args.data_dir else out / "node"
    recv_port = _free_port()
    config = load_config(
        env={}, data_dir=data_dir.resolve(), dimse_host="127.0.0.1", dimse_port=_free_port(),
        http_host="127.0.0.1", http_port=_free_port(), allowed_callers=DEMO_PACS,
        return_ports=f"{DEMO_PACS}={recv_port}", settle_seconds=2.0, study_timeout_seconds=30.0,
        api_token=secrets.token_urlsafe(16), scheduler_interval_seconds=0.5,
        job_retry_delay_seconds=2.0,
    )
    print(f"node data in {data_dir}; database {config.db_url}; broker {config.broker}")
    migrate.upgrade(config.db_url)
    truth = generate_study(out / "study", args.seed)
    files = sorted((out / "study" / "dicom").rglob("*.dcm"))
    print(f"synthetic study seed {args.seed}: {len(files)} files")

    receiver = _receiver(out / "received", recv_port)
    node = Node(config)
    node.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMBAR_NODE_")}
    env.update(config_env(config))
    log_path = out / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "--queues",
                                   "gpu,io"], stdout=log, stderr=subprocess.STDOUT, env=env)
    start = time.monotonic()
    try:
        sent = _send(files, config.dimse_port, config.ae_title)
        print(f"sent {sent}/{len(files)} instances over C-STORE to {config.ae_title}")
        study_uid = truth["study_instance_uid"]
        job, deliveries = None, []
        while time.monotonic() - start < args.timeout:
            with node.sessions() as s:
                study = s.scalar(select(Study).where(Study.study_instance_uid == study_uid))
                job = study and s.scalar(select(Job).where(
                    Job.study_id == study.id, Job.superseded_by.is_(None)).order_by(
                    Job.id.desc()))
                deliveries = list(s.scalars(select(Delivery).where(
                    Delivery.job_id == job.id))) if job else []
            if job and job.state == "failed":
                break
            if job and job.state == "done" and (
                    job.result_status == "rejected" or (deliveries and all(
                        d.status in ("delivered", "dead") for d in deliveries))):
                break
            if worker.poll() is not None:
                print(f"worker exited with {worker.returncode}; see {log_path}")
                return 1
            time.sleep(0.5)
        else:
            print(f"timed out after {args.timeout:.0f} s; see {log_path}")
            return 1
        elapsed = time.monotonic() - start
        print(f"job {job.id}: {job.state}, pipeline status {job.result_status}, "
              f"reason {job.reason}; {elapsed:.1f} s after the first instance was sent")
        if job.state == "failed":
            print(f"worker log: {log_path}")
        with node.sessions() as s:
            findings = list(s.scalars(select(Finding).where(Finding.job_id == job.id)
                                      .order_by(Finding.id)))
            objects = list(s.scalars(select(ResultObject).where(ResultObject.job_id == job.id)))
        _print_findings(findings)
        results = out / "results"
        results.mkdir(exist_ok=True)
        for obj in objects:
            shutil.copy2(obj.path, results / Path(obj.path).name)
        received = sorted((out / "received").glob("*.dcm"))
        for d in deliveries:
            print(f"delivery to {d.destination}: {d.status} after {d.attempts} attempt(s)")
        print(f"{len(received)} objects received by {DEMO_PACS} in {out / 'received'}")
        print(f"results and overlay in {results}")
        print(f"audit trail: .venv/bin/lumbar-node audit --database-url {config.db_url} "
              f"--study {study_uid}")
        print(f"everything the demo wrote (synthetic patient data included) is under {out}; "
              "delete that folder to remove it")
        return 0 if job.state == "done" and received else 1
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        node.stop()
        receiver.shutdown()


def _print_findings(findings: list[Any]) -> None:
    print(f"{'level':<6} {'condition':<28} {'side':<5} {'grade':<12} {'p(N/M, Mod, Sev)':<20} "
          "grader")
    for f in findings:
        probs = ", ".join(f"{p:.2f}" for p in (f.p_normal_mild, f.p_moderate, f.p_severe)
                          if p is not None)
        grade = f.grade if f.assessable else f"n/a ({f.reason})"
        print(f"{f.level:<6} {f.condition:<28} {f.side or '':<5} {grade:<12} {probs:<20} "
              f"{f.grader or ''}")
    print(f"({len(findings)} findings)")
