"""Scoring depth predictions with the protocols of the ZoeDepth paper (no ROS needed)."""
