"""Thresholding axis: weights replaced by importance rank, the leaderboard cases, the Fisher per
device and the planted-task AUC table."""
