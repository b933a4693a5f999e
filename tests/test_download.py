"""Verified, resumable downloads against a server on 127.0.0.1: corrupted and truncated files refused
and deleted, an interrupted transfer resumed with a Range request, --from, the manual items' one line."""
from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sam3dlib.cli import main as cli_main
from sam3dlib.study import downloads
from sam3dlib.utils.download import DownloadError, download

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at /ok, a corrupted copy at /bad, a truncated copy (honest length) at /short, and
    at /cut half of it under the full Content-Length the first time (then whole, honouring Range)."""

    def __init__(self, files=None):
        self.requests = []
        self.files = files or {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = {"/ok": PAYLOAD, "/cut": PAYLOAD, "/bad": PAYLOAD[:1000] + b"X" + PAYLOAD[1001:],
                        "/short": PAYLOAD[: len(PAYLOAD) // 3], **outer.files}.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path == "/cut" and len(outer.requests) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_download_verified(server, tmp_path):
    got = download(server.url + "/ok", tmp_path / "f.pth", md5=MD5)
    assert (tmp_path / "f.pth").read_bytes() == PAYLOAD and got["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    download(server.url + "/ok", tmp_path / "f.pth", md5=MD5)  # present and verified: no transfer
    assert len(server.requests) == 1


@pytest.mark.parametrize("path", ["/bad", "/short"])
def test_corrupted_or_truncated_refused_nothing_left(server, tmp_path, path):
    with pytest.raises(DownloadError, match=f"md5 .* differs from the expected {MD5}"):
        download(server.url + path, tmp_path / "f.pth", md5=MD5)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_resumes(server, tmp_path):
    with pytest.raises(DownloadError, match="resume"):
        download(server.url + "/cut", tmp_path / "f.pth", md5=MD5)
    assert not (tmp_path / "f.pth").exists() and (tmp_path / "f.pth.part").stat().st_size == len(PAYLOAD) // 2
    download(server.url + "/cut", tmp_path / "f.pth", md5=MD5)
    assert (tmp_path / "f.pth").read_bytes() == PAYLOAD and not (tmp_path / "f.pth.part").exists()
    assert server.requests[-1] == ("/cut", f"bytes={len(PAYLOAD) // 2}-")


def test_sam_item_cli_records_sha256_and_from_file(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(downloads, "OFFICIAL_URL_BASE", server.url + "/")
    monkeypatch.setitem(downloads.OFFICIAL_MD5, "vit_b", MD5)
    server.files["/sam_vit_b_01ec64.pth"] = PAYLOAD
    assert cli_main(["download", "sam-vit-b", "--to", str(tmp_path / "ck"), "--no-progress"]) == 0
    assert f"official md5 {MD5} verified" in capsys.readouterr().out
    rec = (tmp_path / "ck" / "downloads.json").read_text()
    assert hashlib.sha256(PAYLOAD).hexdigest() in rec
    hand = tmp_path / "hand.pth"
    hand.write_bytes(PAYLOAD[:-1] + b"?")
    assert cli_main(["download", "sam-vit-b", "--to", str(tmp_path / "ck2"), "--from", str(hand)]) == 2
    assert "differs from the expected" in capsys.readouterr().err and not (tmp_path / "ck2").exists()
    hand.write_bytes(PAYLOAD)
    assert cli_main(["download", "sam-vit-b", "--to", str(tmp_path / "ck2"), "--from", str(hand)]) == 0
    assert (tmp_path / "ck2" / "sam_vit_b_01ec64.pth").read_bytes() == PAYLOAD


def test_msd_through_monai_table(server, tmp_path, monkeypatch):
    from monai.apps import DecathlonDataset

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"{}"
        info = tarfile.TarInfo("Task06_Lung/dataset.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    server.files["/Task06_Lung.tar"] = buf.getvalue()
    monkeypatch.setitem(DecathlonDataset.resource, "Task06_Lung", server.url + "/Task06_Lung.tar")
    monkeypatch.setitem(DecathlonDataset.md5, "Task06_Lung", hashlib.md5(buf.getvalue()).hexdigest())
    path, what = downloads.fetch("lung", tmp_path)
    assert (path / "dataset.json").read_bytes() == b"{}" and "Task06_Lung" in what
    monkeypatch.setitem(DecathlonDataset.md5, "Task06_Lung", "0" * 32)
    with pytest.raises(DownloadError):
        downloads.fetch("lung", tmp_path / "other")
    assert not any((tmp_path / "other").glob("*.tar*"))


@pytest.mark.parametrize("item, words", [("synapse", "registered account"), ("authors-weights", "browser"),
                                         ("authors-predictions", "RELEASED_PREDICTIONS")])
def test_manual_items_one_line(item, words, tmp_path, capsys):
    assert cli_main(["download", item, "--to", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and str(tmp_path) in err
