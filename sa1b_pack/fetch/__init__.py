"""Download SA-1B from Meta's links file, resumably, packing shards as they land."""
