"""The names of the engines that can run the network (engines.py) and of the precisions they run,
importable without torch: the command-line options and the node's parameter table list them.

`PRECISIONS` is what a user may ask for (node parameter `precision`, `--precision` of `predict`
and `evaluate`): `auto` picks the fastest precision this machine runs natively (precision.py);
`int8` runs a calibrated int8 export (`zoedepth-ros export --precision int8`). `EXPORT_PRECISIONS`
is what `zoedepth-ros export` writes.
`DEVICE_PATTERN` is the devices they run on: auto, cpu, cuda or cuda:N.
"""

import re

ENGINES = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
# The export an engine runs for each precision (bf16 on OpenVINO compiles an fp32 export in bf16).
EXPORT_OF = {"fp32": "fp32", "bf16": "fp32", "fp16": "fp16", "int8": "int8"}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
