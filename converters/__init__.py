"""Domain formats, free of torch: each module converts between a domain's files and target text,
parses model output without raising, and can render synthetic images of its own objects."""
