"""The store: format and column list, storage backends, manifest, part writer, packer,
readers and verify. The writer emits exactly what the readers consume."""
