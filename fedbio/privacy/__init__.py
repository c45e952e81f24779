"""Privacy defences for a run, and what they buy, measured: differential privacy accounted by
Opacus (never by a formula of ours), filters on the update, and a membership-inference attack.

- ``config``      ``PrivacyConfig``: DP-FedAvg's clip S, noise multiplier z (or a target epsilon),
                  where the noise is added; DP-SGD's clip C and noise Z (or a target epsilon);
                  delta; built once from ``fedbio run --dp-*``.
- ``options``     the ``--dp-*`` and ``--dp-sgd-*`` options, and where each applies.
- ``accounting``  epsilon from Opacus's RDP accountant, and z for a target epsilon.
- ``updates``     a site's update clipped to norm S, Gaussian noise, the noisy mean of updates,
                  the composition model's fixed scaling.
- ``sgd``         DP-SGD at one site: Opacus's per-record gradients, clipping and noise, Poisson
                  batches, an accountant over all the site's steps.
- ``fedavg``      a DP run's refusals, what sites and server are told, ``metrics.json``'s block.
- ``releases``    everything a site sends under DP, and how each is handled (``metrics.json``).
- ``sharing``     selective sharing (the largest entries of an update), the filters' metrics block.
- ``membership``  ROC AUC and TPR at a low FPR with bootstrap intervals (numpy).
- ``attack``      ``fedbio attack membership``: members, non-members, the loss and calibrated
                  attacks on a run's delivered model, written into the run.
- ``cli``         the ``fedbio attack`` command line.

Site-level DP-FedAvg (McMahan et al., ICLR 2018) protects one site's whole data set; record-level
DP-SGD (Abadi et al., CCS 2016) one record; selective sharing and NVFlare's SVT (its filter lives
in ``fedbio.federation.nvflare.filters``) guarantee nothing by themselves. ``fedbio.federation``
and ``fedbio.training`` call these; nothing here imports NVFlare.
"""
