"""Lead Bridge: receive lead webhooks and forward every lead, exactly once in effect."""

__version__ = "0.1.0"
