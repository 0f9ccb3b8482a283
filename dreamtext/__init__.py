"""dreamtext: text→3D and image→3D by distilling a 2D diffusion model into a NeRF."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# The environment as dreamtext was first imported, where torch (and with it libgomp, which reads
# its OpenMP settings once, as it loads) was imported before: what the process's environment
# held then is nearer that load than anything dreamtext sees later
# (:func:`dreamtext.inputs.openmp_wait_read`). ``None`` where torch was not loaded yet.
ENVIRON_AT_IMPORT: dict[str, str] | None = dict(_os.environ) if "torch" in _sys.modules else None
