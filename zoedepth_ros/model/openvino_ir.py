"""OpenVINO IR files (`.xml` + `.bin`): what `zoedepth-ros export --precision int8 -o NAME.xml` writes.

An int8 export quantized through NNCF's OpenVINO backend (quantize.py) is saved as OpenVINO's own
format: the graph in `NAME.xml`, the weights in `NAME.bin` beside it (OpenVINO finds the `.bin` by
the `.xml`'s name). The export's metadata (`ExportInfo.metadata()`, the same keys as an ONNX file's
`metadata_props`) travels in the model's rt_info: key `zoedepth_ros.precision` is the rt_info path
`zoedepth_ros` / `precision`, in the `<rt_info>` section at the end of the `.xml`.

This module knows OpenVINO's side only (no imports from the rest of the package): `export.py`
checks the metadata it reads, `quantize.py` hands it the metadata to write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

IR_SUFFIX = ".xml"
WEIGHTS_SUFFIX = ".bin"
SECTION = "zoedepth_ros"  # the rt_info section of the metadata (its keys' prefix)


def weights_path(path: str | os.PathLike) -> Path:
    """The `.bin` that OpenVINO reads with the IR at `path`."""
    return Path(path).with_suffix(WEIGHTS_SUFFIX)


def ir_bytes(path: str | os.PathLike) -> int:
    """Size of the IR at `path`: its `.xml` and its `.bin`."""
    return sum(p.stat().st_size for p in (Path(path), weights_path(path)) if p.exists())


def save_ir(model, path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write the `openvino.Model` `model` at `path` (`.xml`, and its `.bin`) with `metadata`
    (`SECTION.name` -> string) in its rt_info, weights as they are (no fp16 compression).

    Both files are written under temporary names in the same directory and renamed into place, the
    `.bin` first: a failure leaves neither a half-written file nor a temporary one behind."""
    import openvino

    path = Path(path)
    if path.suffix.lower() != IR_SUFFIX:
        raise ValueError(f"{path}: an OpenVINO IR is written to a {IR_SUFFIX} file")
    for key, value in metadata.items():
        section, _, name = key.partition(".")
        if section != SECTION or not name:
            raise ValueError(f"metadata key {key!r} is not under {SECTION}.")
        model.set_rt_info(value, [SECTION, name])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{IR_SUFFIX}", dir=path.parent)
    os.close(fd)
    tmp_bin = weights_path(tmp)
    try:
        openvino.save_model(model, tmp, compress_to_fp16=False)
        umask = os.umask(0)
        os.umask(umask)
        for written in (tmp, tmp_bin):
            os.chmod(written, 0o666 & ~umask)  # mkstemp's 0600 would hide the files from other users
        os.replace(tmp_bin, weights_path(path))
        os.replace(tmp, path)
    finally:
        for leftover in (Path(tmp), tmp_bin):
            leftover.unlink(missing_ok=True)


def read_ir(path: str | os.PathLike) -> tuple[dict[str, str], list[str], list[str]]:
    """(metadata `SECTION.name` -> string, input names, output names) of the IR at `path`. OpenVINO's
    own errors (a missing or truncated `.bin`, a malformed `.xml`) pass through; ImportError without
    openvino."""
    import openvino

    model = openvino.Core().read_model(str(path))
    info = model.get_rt_info()
    metadata = {}
    if SECTION in info:
        for name in info[SECTION]:
            metadata[f"{SECTION}.{name}"] = model.get_rt_info([SECTION, name]).astype(str)
    return metadata, [i.get_any_name() for i in model.inputs], [o.get_any_name() for o in model.outputs]
