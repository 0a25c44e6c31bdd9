"""The study: the thesis' tables from the run records (tables, report, render) and TensorBoard
over the runs (dashboard, layout). Library code only; the commands are deblur.tables and
deblur.dashboard."""
