"""Saliency axis: faithfulness of every saliency method, and explanations kept under thresholding."""
