"""Hostile bytes over C-STORE and STOW-RS: the node answers, keeps serving, and writes only
into its spool."""

from __future__ import annotations

import os
import re
from pathlib import Path

import _harness
import httpx
import load
import pydicom
from mutants import HOSTILE_UIDS, Mutant, mutants
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import MRImageStorage

SEED = 20261122
COUNT = 240
SPOOL_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{40}/[0-9a-f]{40}\.dcm$")
REFUSALS = {0xA700, 0xA900, 0xC000, 0xC210, 0xC211, 0xC212, 0x0122}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def template(tmp_path: Path) -> Dataset:
    files = load.plain_study(tmp_path / "template", seed=1, size=16, per_series=1)
    return pydicom.dcmread(files[0])


def stow(client: httpx.Client, data: bytes) -> httpx.Response:
    boundary = "fuzzboundary0123456789"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    return client.post("/dicomweb/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})


def send_dimse(port: int, items: list[tuple[Mutant, Path]]) -> dict[str, int | None]:
    """C-STORE each file's bytes as they are (chunked send: no client-side decoding)."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(MRImageStorage, ["1.2.840.10008.1.2.1"])
    statuses: dict[str, int | None] = {}
    saved = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="LUMBARNODE")
        for mutant, path in items:
            if not assoc.is_established:
                assoc = ae.associate("127.0.0.1", port, ae_title="LUMBARNODE")
            assert assoc.is_established, "the node stopped accepting associations"
            try:
                status = assoc.send_c_store(path)
            except Exception:  # pynetdicom refuses to frame it (meta UID invalid): STOW-RS only
                statuses[mutant.name] = -1
                continue
            statuses[mutant.name] = int(status.Status) if "Status" in status else None
        assoc.release()
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = saved
    return statuses


def test_mutants_are_refused_and_the_node_keeps_serving(tmp_path: Path, make_stack) -> None:
    root = tmp_path / "root"
    stack = make_stack(root, workers=0, pacs=False)
    stack.node.cwd = root / "cwd" / "a" / "b"  # relative escapes would land inside root
    stack.node.cwd.mkdir(parents=True)
    stack.start()
    canary = root / "etc" / "passwd"
    canary.parent.mkdir(parents=True)
    canary.write_text("root:x:0:0\n")
    before = snapshot(root)
    etc_passwd = os.stat("/etc/passwd").st_mtime_ns

    base = template(tmp_path)
    made = list(mutants(base, SEED, COUNT))
    assert len({m.data for m in made}) > COUNT * 0.7, "mutants should mostly differ"
    folder = tmp_path / "mutants"
    folder.mkdir()
    files = []
    for i, mutant in enumerate(made):
        path = folder / f"m{i:04d}.dcm"
        path.write_bytes(mutant.data)
        files.append((mutant, path))

    dimse = send_dimse(stack.config.dimse_port, [f for f in files if f[0].meta_intact])
    headers = {"Authorization": f"Bearer {stack.config.api_token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.config.http_port}", headers=headers,
                      timeout=30) as client:
        web: dict[str, int] = {}
        for m in made:
            try:
                web[m.name] = stow(client, m.data).status_code
            except httpx.TransportError as exc:
                web[m.name] = -1
                assert stack.node.check_alive(), f"node died on {m.name}: {exc}"
        assert stack.node.check_alive()

        # every C-STORE got an answer: success or a refusal status, never silence
        answered = {k: v for k, v in dimse.items() if v != -1}
        assert len(answered) > COUNT * 0.5
        assert all(v == 0 or v in REFUSALS for v in answered.values()), answered
        odd = {k: v for k, v in web.items() if v not in (200, 400, 409, 415)}
        assert odd == {}, odd
        # hostile UIDs in the dataset are refused both ways, whatever else was changed
        for name, status in answered.items():
            if any(name.endswith(f"= {uid!r}") for uid in HOSTILE_UIDS):
                assert status in REFUSALS, (name, status)
                assert web[name] == 409, (name, web[name])
        refused = sum(1 for v in answered.values() if v in REFUSALS)
        assert refused > len(answered) * 0.5

        # and the node still takes a valid study both ways
        study = load.plain_study(tmp_path / "valid", seed=2, size=16, per_series=2)
        stack.send(study[:3])
        assert stow(client, study[3].read_bytes()).status_code == 200

    after = snapshot(root)
    changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
    spool_prefix = "data/spool/"
    outside = sorted(p for p in changed if not p.startswith((spool_prefix, "logs/")))
    assert outside == [], f"files written outside the spool: {outside}"
    spooled = [p[len(spool_prefix):] for p in changed if p.startswith(spool_prefix)]
    assert spooled and all(SPOOL_NAME.match(p) for p in spooled), spooled
    assert canary.read_text() == "root:x:0:0\n"
    assert os.stat("/etc/passwd").st_mtime_ns == etc_passwd
    assert not list(Path("/tmp").glob("lumbar-escape*"))


def test_hostile_request_uids_over_dcmtk(tmp_path: Path, make_stack) -> None:
    """dcmtk's storescu puts the dataset's UID in the C-STORE request too: still refused."""
    from mutants import _lenient_writing

    stack = make_stack(tmp_path / "s", workers=0, pacs=False).start()
    for i, uid in enumerate(["../../etc/passwd", "1.2.3/../../x", "1." + "9" * 70]):
        ds = template(tmp_path)
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = tmp_path / f"hostile{i}.dcm"
        with _lenient_writing():
            ds.save_as(path, enforce_file_format=True)
        done = _harness.storescu(stack.config.dimse_port, [path], extra=["-v"])
        response = done.stderr.split("Received Store Response")[-1][:300]
        assert done.returncode != 0 or "Success" not in response, (uid, done.stderr[-500:])
    assert _harness.spool_files(stack.config.spool) == []
    assert stack.node.check_alive()
