"""Files, safely: inputs opened only if regular, one JSON loader, checkpoint directories and
their config, atomic no-replace output, progress bars and figures."""
