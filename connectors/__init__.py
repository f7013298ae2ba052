"""Built-in connectors. Each module is imported only when a destination uses it."""
