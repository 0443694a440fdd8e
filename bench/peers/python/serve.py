"""Run the FastAPI peer on uvicorn, with uvloop and httptools, one worker process per core.

Reads PORT (listens on 127.0.0.1:PORT), DATABASE_URL, and WEB_CONCURRENCY, the worker count,
which defaults to the number of cores this process may run on.
"""

import os
import sys

import uvicorn

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "access": {"format": "%(asctime)s %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "peer.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
}


def main() -> int:
    port_text = os.environ.get("PORT", "")
    if not port_text.isdigit():
        print(f"environment variable PORT must be a TCP port number, got {port_text!r}", file=sys.stderr)
        return 1
    if not os.environ.get("DATABASE_URL"):
        print("environment variable DATABASE_URL is missing or empty", file=sys.stderr)
        return 1

    # app.py reads the same variable to size each worker's share of the pool.
    workers = int(os.environ.setdefault("WEB_CONCURRENCY", str(len(os.sched_getaffinity(0)))))
    uvicorn.run(
        "app:app",
        host="127.0.0.1",
        port=int(port_text),
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        # The API logs its own access lines, and proxy headers are read on the API only.
        access_log=False,
        proxy_headers=False,
        log_config=LOG_CONFIG,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
