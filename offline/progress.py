"""The offline tools' progress bar."""

from __future__ import annotations

import sys
import time


class Progress:
    """A progress bar on stderr: tqdm where installed, else a counter line refreshed every second."""

    def __init__(self, total: int | None, initial: int = 0, enabled: bool = True, unit: str = "q"):
        self.total, self.count, self.enabled, self.unit = total, initial, enabled, unit
        self._started, self._shown, self._initial = time.monotonic(), 0.0, initial
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._shown >= 1.0:
            self._show()

    def _show(self, end: str = "") -> None:
        self._shown = time.monotonic()
        rate = (self.count - self._initial) / max(self._shown - self._started, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        print(f"\r{self.count}{of} {self.unit}, {rate:.1f} {self.unit}/s", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._show(end="\n")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
