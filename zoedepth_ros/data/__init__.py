"""Datasets as rosbag2 evaluation bags: the bag layout, its reader and writer, synthetic scenes."""
