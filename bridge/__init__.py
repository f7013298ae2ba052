"""Lead Bridge: receive lead webhooks and forward every lead, exactly once in effect."""

__version__ = "0.1.0"

# Sent with every outbound request, so a receiver's logs say who called.
USER_AGENT = f"lead-bridge/{__version__}"
