"""The ``waypost`` command: the administrator's tool, one module per noun."""
