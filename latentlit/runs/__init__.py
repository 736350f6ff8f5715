"""Run files: the output directory (name, ``run.json``, resume checks), the records reader, the
run lock and tensor files."""
