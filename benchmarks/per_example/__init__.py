"""Per-example timing groups: the per-example moments side by side, on Dense/Conv models and on
models beyond them."""
