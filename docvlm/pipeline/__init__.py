"""The page pipeline: regions of each page found (a layout model) or read (`--regions`), each routed to the
model that reads it, assembled into one DoclingDocument per document."""
