"""The one HTTP engine of the server (aiohttp.web in the server's event loop):
WebUser now; personal sites, WebAdmin and the rest later (design.md)."""
