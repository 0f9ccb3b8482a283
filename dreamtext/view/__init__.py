"""``dreamtext view``: a local web page of runs and batches (gallery, run pages, live curves).

    folders ──► workspaces (find runs, read their files) ──► page (HTML + data) ──► server | static

Read-only: it never writes into a workspace. See ``server`` for what it serves and refuses.
"""

from dreamtext.view.server import make_server, serve
from dreamtext.view.static import export_static
from dreamtext.view.workspaces import DEFAULT_ROOT, Catalog, read_run

__all__ = ["DEFAULT_ROOT", "Catalog", "export_static", "make_server", "read_run", "serve"]
