"""The ROS 2 boundary: every module of the package that imports rclpy or ROS message packages at
module level lives here (test/test_structure.py checks it), so the rest (the model, the codecs,
evaluation, training) imports without a ROS installation.

Importing this package imports nothing: `processes` (DDS profile, node processes) stays ROS-free,
so `demo` and `benchmark` can use it without rclpy.
"""
