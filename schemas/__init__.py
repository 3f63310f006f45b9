"""The layout schema files, shipped inside the package as ``bumpconv.schemas``."""
