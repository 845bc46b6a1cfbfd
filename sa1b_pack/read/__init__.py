"""The read side: a store opened by URL, its parts memory-mapped or read by range, a sample's
arrays and masks, and verify, which re-reads everything against the manifest and the tars."""
