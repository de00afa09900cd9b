"""The names of the engines that can run the network (engines.py), importable without torch: the
command-line options and the node's parameter table list them."""

ENGINES = ("torch", "onnxruntime", "openvino", "tensorrt")
