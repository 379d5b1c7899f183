"""DIMSE as hospital PACS speak it, against a real Orthanc: --calling-aet, C-MOVE to medseg's own
storage SCP (registered on Orthanc as a modality), radiograph storage classes (a real CR and a DX
through C-GET and C-MOVE, pixels compared with the files sent), and failures that say what failed
(association rejected with the PACS's reason, connection refused, timeouts)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medseg.batch.local_orthanc import LocalOrthanc, free_port, orthanc_available
from medseg.batch.pacs import PacsOptions, PacsSeries, SeriesQuery, client_from_uri
from medseg.data import sample
from medseg.data.dicom_writer import write_dicom_xray
from medseg.errors import PACSError

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed"),
]


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xray")
    rng = np.random.default_rng(0)
    dx = write_dicom_xray(rng.integers(0, 4000, (64, 48)).astype(np.uint16), 0.2, folder / "dx.dcm",
                          modality="DX", series_description="chest pa")
    return {"CR": sample("cr_rg3"), "DX": dx}


@pytest.fixture(scope="module")
def pacs(radiographs):
    move_port = free_port()
    modalities = {"medseg": ("MEDSEG", "127.0.0.1", move_port), "ward": ("WARD7AI", "127.0.0.1", move_port)}
    with LocalOrthanc(modalities=modalities, check_called_aet=True) as p:
        p.upload([get_testdata_file("CT_small.dcm"), *radiographs.values()])
        p.move_port = move_port
        yield p


def dimse(pacs, **opts):
    host, port, aet = pacs.dimse
    return client_from_uri(f"dimse://{aet}@{host}:{port}", PacsOptions(**opts))


def _series(path) -> PacsSeries:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return PacsSeries(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.Modality))


@pytest.mark.parametrize("retrieve", ["get", "move"])
@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_radiograph_retrieved_by_c_get_and_c_move(pacs, radiographs, tmp_path, retrieve, modality):
    client = dimse(pacs, retrieve=retrieve, move_port=pacs.move_port)
    try:
        found = client.find_series(SeriesQuery(modality=modality))
        assert [s.series_instance_uid for s in found] == [_series(radiographs[modality]).series_instance_uid]
        files = client.retrieve_series(found[0], tmp_path / "in")
    finally:
        client.close()
    source = pydicom.dcmread(radiographs[modality])
    got = pydicom.dcmread(files[0])
    assert len(files) == 1 and got.SOPInstanceUID == source.SOPInstanceUID
    assert got.SOPClassUID == source.SOPClassUID
    assert np.array_equal(got.pixel_array, source.pixel_array)


def test_calling_aet_is_the_one_registered_on_the_pacs(pacs, tmp_path):
    client = dimse(pacs, calling_aet="WARD7AI", retrieve="move", move_aet="WARD7AI", move_port=pacs.move_port)
    try:
        found = client.find_series(SeriesQuery(modality="CT"))
        assert len(client.retrieve_series(found[0], tmp_path)) == 1
    finally:
        client.close()
    with pytest.raises(PACSError, match="may not allow AE title INTRUDER"):  # Orthanc answers no status
        dimse(pacs, calling_aet="INTRUDER").find_series(SeriesQuery(modality="CT"))


def test_c_move_to_a_destination_the_pacs_does_not_know(pacs, tmp_path):
    client = dimse(pacs, retrieve="move", move_aet="NOTREGISTERED", move_port=free_port())
    try:
        with pytest.raises(PACSError, match="does the PACS know the destination NOTREGISTERED"):
            client.retrieve_series(client.find_series(SeriesQuery(modality="CT"))[0], tmp_path)
    finally:
        client.close()
    assert not list(tmp_path.rglob("*.dcm"))


def test_c_move_destination_refuses_what_nobody_asked_for(pacs, tmp_path):
    """medseg's SCP stores only the series a retrieval waits for: a push of anything else is refused."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    client = dimse(pacs, retrieve="move", move_port=pacs.move_port, move_host="127.0.0.1")
    scp = client.store_scp()
    try:
        ae = AE(ae_title="PUSHER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", pacs.move_port, ae_title="MEDSEG")
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
        assoc.release()
        assert status.Status != 0x0000
    finally:
        client.close()
    assert scp is not None and not list(tmp_path.rglob("*"))


def test_association_rejected_with_the_pacs_reason(pacs):
    host, port, _ = pacs.dimse
    client = client_from_uri(f"dimse://WRONGAET@{host}:{port}")
    with pytest.raises(PACSError) as exc:
        client.find_series(SeriesQuery())
    msg = str(exc.value)
    assert "rejected by the PACS: Called AE title not recognised" in msg and "WRONGAET" in msg


def test_connection_refused_and_timeouts_are_told_apart(tmp_path):
    closed = free_port()
    with pytest.raises(PACSError, match="connection refused"):
        client_from_uri(f"dimse://ORTHANC@127.0.0.1:{closed}").find_series(SeriesQuery())
    with pytest.raises(PACSError, match="connection refused"):
        client_from_uri(f"http://127.0.0.1:{closed}/dicom-web").find_series(SeriesQuery())
    with socket.socket() as silent:  # accepts TCP connections (kernel backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        opts = PacsOptions(connect_timeout_s=1.0, read_timeout_s=1.0)
        t = time.monotonic()
        with pytest.raises(PACSError, match="no association answer within 1 s"):
            client_from_uri(f"dimse://ORTHANC@127.0.0.1:{port}", opts).find_series(SeriesQuery())
        with pytest.raises(PACSError, match="no answer within 1 s \\(read timeout"):
            client_from_uri(f"http://127.0.0.1:{port}/dicom-web", opts).find_series(SeriesQuery())
        assert time.monotonic() - t < 10


def test_connect_timeout_is_named():
    import requests

    from medseg.batch.pacs_errors import http_reason

    assert "no connection within 2 s (connect timeout" in http_reason(requests.exceptions.ConnectTimeout(), 2, 9)


def test_batch_by_c_move_stores_one_seg_per_series(tmp_path, capsys):
    """`medseg batch dimse://... --retrieve move --store-back`: the PACS knows medseg's SCP as a
    modality; each series is moved, segmented and its SEG stored once, also on a rerun."""
    from test_batch_job import _write_series, make_band_run

    from medseg import cli

    (tmp_path / "run").mkdir()
    run_dir = make_band_run(tmp_path / "run", (48, 48, 16))
    move_port = free_port()
    with LocalOrthanc(modalities={"medseg": ("MEDSEGAI", "127.0.0.1", move_port)}) as pacs:
        sent = {}
        for seed in (21, 22):
            files = _write_series(tmp_path / f"s{seed}", seed=seed)
            pacs.upload(files)
            sent[str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)] = len(files)
        host, port, aet = pacs.dimse
        out = tmp_path / "out"
        args = ["batch", f"dimse://{aet}@{host}:{port}", "--bundle", str(run_dir), "--output", str(out),
                "--store-back", "--retrieve", "move", "--calling-aet", "MEDSEGAI", "--move-port", str(move_port),
                "--retries", "0"]
        assert cli.main(args) == 0, capsys.readouterr().err
        assert "2 stored, 0 already on the PACS, 0 not sent" in capsys.readouterr().out
        segs = pacs.instances_of_modality("SEG")
        assert len(segs) == 2
        refs = set()
        for case in out.glob("series-*"):
            seg = pydicom.dcmread(case / "seg.dcm")
            ref = seg.ReferencedSeriesSequence[0]
            refs.add(str(ref.SeriesInstanceUID))
            assert len(ref.ReferencedInstanceSequence) <= sent[str(ref.SeriesInstanceUID)]
        assert refs == set(sent)
        assert cli.main([*args, "--no-resume"]) == 0
        assert "0 stored, 2 already on the PACS" in capsys.readouterr().out
        assert len(pacs.instances_of_modality("SEG")) == 2


@pytest.mark.slow
def test_batch_segments_a_real_chest_radiograph_moved_from_the_pacs(tmp_path, capsys):
    """The real chest CR through C-MOVE and the shipped xray_chest_lungs bundle: both lungs found.
    medseg writes no DICOM SEG for a radiograph yet, so --store-back says so and the job exits 3
    (nothing is dropped silently)."""
    import nibabel as nib

    from medseg import cli

    move_port = free_port()
    with LocalOrthanc(modalities={"medseg": ("MEDSEG", "127.0.0.1", move_port)}) as pacs:
        pacs.upload([sample("cr_chest")])
        host, port, aet = pacs.dimse
        out = tmp_path / "out"
        code = cli.main(["batch", f"dimse://{aet}@{host}:{port}", "--model", "xray_chest_lungs", "--output", str(out),
                         "--modality", "CR,DX,MG", "--retrieve", "move", "--move-port", str(move_port),
                         "--store-back", "--retries", "0"])
        text = capsys.readouterr().out
        assert code == 3 and "0 stored, 0 already on the PACS, 1 not sent" in text
        assert "a DICOM SEG needs a 3D DICOM series" in text
        assert pacs.instances_of_modality("SEG") == []
    labels = np.asarray(nib.load(next(out.glob("series-*/seg.nii.gz"))).dataobj)
    assert set(np.unique(labels)) == {0, 1, 2} and 0.05 < (labels > 0).mean() < 0.6


def test_dicomweb_down_fails_fast_in_one_line(tmp_path, capsys):
    """Nothing listening, or a gateway answering 503: one line, exit 2, before any model is loaded
    (the bundle path does not even exist), and without dicomweb-client's 30 s of 503 back-off."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from medseg import cli

    class Unavailable(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for url, says in ((f"http://127.0.0.1:{free_port()}/dicom-web", "connection refused"),
                          (f"http://127.0.0.1:{server.server_address[1]}/dicom-web", "HTTP 503 (the server or a gateway")):
            t = time.monotonic()
            code = cli.main(["batch", url, "--bundle", str(tmp_path / "no-such-model"), "--output", str(tmp_path / "o")])
            elapsed = time.monotonic() - t
            err = capsys.readouterr().err
            assert code == 2 and err.count("\n") == 1 and says in err, err
            assert elapsed < 5, elapsed
    finally:
        server.shutdown()
        server.server_close()
