"""SmartTags: learn a customer's own taxonomy from tagged assets, tag new uploads, rank search."""

__version__ = "0.1.0"
