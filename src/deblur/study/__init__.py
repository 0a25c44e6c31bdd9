"""The study: the thesis' tables from the run records, and TensorBoard over the runs."""
