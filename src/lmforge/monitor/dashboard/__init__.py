"""`lmforge dashboard`: a local, read-only web page comparing runs live (see server.py)."""

from lmforge.monitor.dashboard.server import DashboardServer, create_app, serve

__all__ = ["DashboardServer", "create_app", "serve"]
