"""zoedepth_ros: real-time metric depth (ZoeDepth) for ROS 2 robots."""

__version__ = "0.1.0"
