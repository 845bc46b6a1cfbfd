"""The write side: tar shards -> committed parts (writer, tables), the packer that runs and
commits them (locally or on a Dask cluster), and arrays attached to a packed store."""
