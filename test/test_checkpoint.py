"""Checkpoint formats, bad files, the weights cache and the explicit download command."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from zoedepth_ros.cli import main as cli_main
from zoedepth_ros.model import BinHeadConfig, CheckpointError, ZoeDepth, load_model, save_checkpoint, tiny_config
from zoedepth_ros.model.fetch import fetch
from zoedepth_ros.model.weights import WeightsError


@pytest.fixture(scope="module")
def tiny_nk(tiny_model):
    return tiny_model("NK")


def _same_output(a: ZoeDepth, b: ZoeDepth):
    x = torch.randn(1, 3, 192, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(x).metric_depth, b(x).metric_depth, rtol=0, atol=0)


def test_project_format_round_trip(tiny_nk, tmp_path):
    path = save_checkpoint(tiny_nk, tmp_path / "tiny.safetensors", {"note": "test"})
    loaded = load_model(path)
    assert loaded.config == tiny_nk.config
    _same_output(tiny_nk, loaded)
    assert not list(tmp_path.glob(".*partial*"))


def test_kitti_max_depth_override(tmp_path):
    model = ZoeDepth(tiny_config("K", heads=(tiny_config("K").heads[0].__class__("kitti", 16, 1e-3, 10.0),)))
    path = save_checkpoint(model, tmp_path / "k.safetensors")
    assert load_model(path).config.heads[0].max_depth == 10.0
    assert load_model(path, kitti_max_depth=80.0).config.heads[0].max_depth == 80.0


@pytest.mark.parametrize("kind", ["K", "NK"])
def test_kitti_head_range_is_the_same_whatever_the_source(kind, tmp_path):
    """A Hugging Face directory whose config gives the KITTI head 10 m (as Intel/zoedepth-kitti's does,
    naming the head "nyu"; set so for the NK too, to show that the config does not decide) and an
    official-layout .pt of the same weights load as the same model: the KITTI head spans 80 m by
    default, 10 m with kitti_max_depth=10. K's normed bins scale with the range; the NK's softplus
    bins do not use it (as in the official code), so there only the recorded range changes."""
    from hf_oracle import hf_to_official, make_hf_model

    hf_model = make_hf_model(kind, seed=7)
    bins = hf_model.config.bin_configurations
    if kind == "K":
        bins = [{"name": "nyu", "n_bins": bins[0]["n_bins"], "min_depth": 1e-3, "max_depth": 10.0}]
    else:
        bins = [dict(b, max_depth=10.0) if b["name"] == "kitti" else b for b in bins]
        with torch.no_grad():  # route every image to the KITTI head, whose range is under test
            hf_model.metric_head.mlp_classifier.linear2.bias.copy_(torch.tensor([-50.0, 50.0]))
    hf_model.config.bin_configurations = bins
    hf_model.config.backbone_config.layer_norm_eps = 1e-6  # the release's value, which official files imply
    hf_model.save_pretrained(tmp_path / "hf")
    state = hf_to_official(hf_model.state_dict(), hidden=hf_model.config.backbone_config.hidden_size)
    torch.save({"model": state}, tmp_path / f"ZoeD_M12_{kind}.pt")
    x = torch.rand(1, 3, 192, 256, generator=torch.Generator().manual_seed(1))
    depth = {}
    for kitti_max_depth in (None, 10.0):
        hf = load_model(tmp_path / "hf", kitti_max_depth=kitti_max_depth)
        official = load_model(tmp_path / f"ZoeD_M12_{kind}.pt", kitti_max_depth=kitti_max_depth)
        assert hf.config == official.config
        assert hf.config.heads[-1] == BinHeadConfig("kitti", hf.config.heads[-1].n_bins, 1e-3, kitti_max_depth or 80.0)
        _same_output(hf, official)
        with torch.no_grad():
            out = hf(x)
        if kind == "NK":
            assert out.domain.tolist() == [1]
        depth[kitti_max_depth] = out.metric_depth
    if kind == "K":
        assert depth[10.0].max() <= 10.0 < depth[None].max()
    else:
        assert torch.equal(depth[10.0], depth[None])


def test_pickle_with_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {"core.core.pretrained.model.cls_token": Payload()}}, f)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_model(path)
    assert not marker.exists()


def test_truncated_files_are_named(tiny_checkpoint, tmp_path):
    good = Path(tiny_checkpoint("NK")).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated or corrupt"):
        load_model(cut)
    pt = tmp_path / "model.pt"
    torch.save({"model": {"core.core.pretrained.model.cls_token": torch.zeros(1, 1, 8)}}, pt)
    short = tmp_path / "short.pt"
    short.write_bytes(pt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="short.pt.*truncated or corrupt"):
        load_model(short)


def test_wrong_and_missing_keys_are_named(tiny_checkpoint, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tiny_checkpoint("NK")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    state = load_file(path)
    state["decoder.head_conv9.weight"] = state.pop("decoder.head_conv3.weight")
    state["decoder.layer_rn.0.weight"] = state["decoder.layer_rn.0.weight"][:, :-1].contiguous()
    save_file(state, tmp_path / "b.safetensors", metadata=meta)
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "b.safetensors")
    message = str(err.value)
    assert "missing keys: decoder.head_conv3.weight" in message
    assert "unexpected keys: decoder.head_conv9.weight" in message
    assert "decoder.layer_rn.0.weight: checkpoint (32, 15, 3, 3) vs model (32, 16, 3, 3)" in message


def test_foreign_files_are_rejected(tmp_path):
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match="not a ZoeDepth checkpoint"):
        load_model(tmp_path / "resnet.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_model(tmp_path / "list.pt")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match="without the zoedepth_ros metadata"):
        load_model(tmp_path / "bare.safetensors")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "dpt"}))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").write_bytes((tmp_path / "bare.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="model_type 'dpt'"):
        load_model(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="not a preset"):
        load_model(tmp_path / "nothing-here")


def test_preset_resolves_from_the_weights_cache(tiny_nk, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOEDEPTH_ROS_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="weights fetch ZoeD_M12_NK"):
        load_model("ZoeD_M12_NK")
    save_checkpoint(tiny_nk, tmp_path / "ZoeD_M12_NK.safetensors")
    _same_output(tiny_nk, load_model("ZoeD_M12_NK"))


class _Server:
    """A loopback HTTP server serving `payload`; `truncate` makes it stop early."""

    def __init__(self, payload: bytes, truncate: bool = False):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2] if outer.truncate else payload)

            def log_message(self, *args):
                pass

        self.truncate = truncate
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ZoeD_M12_NK.pt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fetch_verifies_sha256_and_writes_atomically(tmp_path):
    payload = os.urandom(3 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    server = _Server(payload)
    try:
        with pytest.raises(WeightsError, match="sha256 .* is required"):
            fetch("ZoeD_M12_NK", url=server.url, dest_dir=tmp_path, progress=False)
        with pytest.raises(WeightsError, match="sha256 mismatch"):
            fetch("ZoeD_M12_NK", sha256="0" * 64, url=server.url, dest_dir=tmp_path, progress=False)
        assert list(tmp_path.iterdir()) == []  # nothing that looks complete, no partial left
        path = fetch("ZoeD_M12_NK", sha256=digest, url=server.url, dest_dir=tmp_path, progress=False)
        assert path == tmp_path / "ZoeD_M12_NK.pt" and path.read_bytes() == payload
    finally:
        server.close()


def test_interrupted_download_leaves_no_file(tmp_path):
    payload = os.urandom(1 << 20)
    server = _Server(payload, truncate=True)
    try:
        with pytest.raises(WeightsError):
            fetch("ZoeD_M12_NK", sha256=hashlib.sha256(payload).hexdigest(), url=server.url,
                  dest_dir=tmp_path, progress=False, timeout=5)
        assert list(tmp_path.iterdir()) == []
    finally:
        server.close()


def test_weights_convert_command(tiny_nk, tmp_path, capsys):
    src = save_checkpoint(tiny_nk, tmp_path / "src.safetensors")
    assert cli_main(["weights", "convert", str(src), str(tmp_path / "out.safetensors")]) == 0
    _same_output(tiny_nk, load_model(tmp_path / "out.safetensors"))
    assert cli_main(["weights", "convert", str(tmp_path / "missing.pt"), str(tmp_path / "x.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("dtype, torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_weights_convert_to_half_storage(tiny_nk, tmp_path, dtype, torch_dtype):
    """Half-precision storage: every float tensor is stored rounded to that type, the file is about
    half the float32 one, and loading gives back a float32 model with exactly the rounded weights."""
    from safetensors import safe_open

    full = save_checkpoint(tiny_nk, tmp_path / "full.safetensors")
    half = tmp_path / f"{dtype}.safetensors"
    assert cli_main(["weights", "convert", str(full), str(half), "--dtype", dtype]) == 0
    with safe_open(str(half), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    expected = tiny_nk.state_dict()
    assert stored.keys() == expected.keys()
    for k, v in expected.items():
        assert stored[k].dtype == (torch_dtype if v.is_floating_point() else v.dtype), k
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55
    loaded = load_model(half)
    for k, v in loaded.state_dict().items():
        assert v.dtype == expected[k].dtype
        assert torch.equal(v, expected[k].to(torch_dtype).to(v.dtype)), k
