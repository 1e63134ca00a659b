"""Peak memory of this process, measured from a reset point (stdlib only: both bench venvs import it)."""

from __future__ import annotations

import resource


def reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS (Linux: clear_refs 5), so that the peak read
    later is the dedup's and not that of loading the documents; returns the current RSS in KiB."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the peak then includes loading
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    return _status_kib("VmHWM")


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
