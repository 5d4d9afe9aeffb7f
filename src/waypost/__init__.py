"""Waypost: a communications server with one Router and one Directory."""

__version__ = "0.1.0"
