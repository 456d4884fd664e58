"""Infrastructure that imports nothing else of Pingyi: config, extensions, link signing."""
