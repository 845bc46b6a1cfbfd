"""The store's contract, defined here once: ``files.py`` (format version, file names, payloads
and their spans, manifest keys) and ``columns.py`` (the one declarative list of columns of both
tables). The writer emits exactly this and the readers and verify consume exactly this.
Importing this package loads nothing heavy; ``columns`` needs pyarrow."""
