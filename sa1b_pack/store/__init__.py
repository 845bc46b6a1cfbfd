"""What both sides of a store share above its files: the manifest (which parts are committed),
the map from a global index to (part, row), the epoch orders over parts, and named subsets."""
