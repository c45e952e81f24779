"""Logging for the simulator: a silent console (CRITICAL only), complete files per site.

fedbio says what a run is doing itself (a line per round, per site and epoch now and then) and,
when a run fails, one error line that names the folder holding these logs (``error.txt`` quotes
their last lines); NVFlare's own warnings and errors would interleave with that, so they go to
the files only.

``LOG_CONFIG`` is a ``logging.config.dictConfig`` dict that NVFlare applies in each of its
processes; file names are relative to each site's folder in ``RUN/nvflare/<job>/``.
"""

from __future__ import annotations

import logging


class ConsoleFilter(logging.Filter):
    """Drops the routine end-of-job notices NVFlare's Client API logs as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.ERROR and "END_RUN" in record.getMessage())


_FMT = "%(asctime)s - %(name)s - %(levelname)s - %(fl_ctx)s - %(message)s"

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "base": {"()": "nvflare.fuel.utils.log_utils.BaseFormatter", "fmt": _FMT},
        "console": {"()": "nvflare.fuel.utils.log_utils.BaseFormatter",
                    "fmt": "%(asctime)s - %(name)s - %(levelname)s - %(message)s"},
    },
    "filters": {"quiet": {"()": "fedbio.federation.nvflare.logs.ConsoleFilter"}},
    "handlers": {
        "consoleHandler": {"class": "logging.StreamHandler", "level": "CRITICAL", "formatter": "console",
                           "filters": ["quiet"], "stream": "ext://sys.stdout"},
        "logFileHandler": {"class": "logging.FileHandler", "level": "DEBUG", "formatter": "base",
                           "filename": "log.txt", "mode": "a"},
        "errorFileHandler": {"class": "logging.FileHandler", "level": "ERROR", "formatter": "base",
                             "filename": "error_log.txt", "mode": "a"},
    },
    "loggers": {"root": {"level": "INFO", "handlers": ["consoleHandler", "logFileHandler", "errorFileHandler"]}},
}
