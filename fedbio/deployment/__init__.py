"""A real NVFlare deployment on this machine: provisioned kits, one process per participant.

    fedbio deploy up --sites 3 --workspace W        # provision, start, wait for every site
    fedbio run --mode fedavg --deployment W --out runs/deployed
    fedbio deploy down --workspace W

- ``kits.py``: ``nvflare provision`` with fedbio's project file, one kit per organisation, each
  site's data copied into its own kit; everything under W.
- ``processes.py``: starting and ending the server's and sites' processes (whole trees, found
  by a mark in their environment), and the deployment's record ``W/deployment.json``.
- ``admin.py``: NVFlare's Session API as a user (the consortium's admin by default): connected
  sites, submit, watch, logs, download.
- ``jobs.py``: a fedbio run as a job on the deployment (``fedbio run --deployment W``), as
  the admin or another user (``--submitter``).
- ``policy.py``: whose jobs a site runs (its ``local/authorization.json``; ``fedbio deploy policy``).
- ``approval.py``: ``JobRequests``, each site's record of the jobs submitted to it.
- ``cli.py``: ``fedbio deploy up | status | logs | stop-site | start-site | policy | down``.

With ``fedbio.federation.nvflare``, the only place fedbio imports NVFlare.
"""
