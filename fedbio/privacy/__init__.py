"""Differential privacy for a federation, accounted by Opacus, never by a formula of ours.

- ``config``      ``PrivacyConfig``: clip S, noise multiplier z (or a target epsilon), delta,
                  where the noise is added; built once from ``fedbio run --dp-*``.
- ``accounting``  epsilon of a run from Opacus's RDP accountant, and z for a target epsilon.
- ``updates``     a site's update clipped to norm S, Gaussian noise, the noisy mean of updates.
- ``releases``    everything a site sends under DP, and how each is handled (``metrics.json``).

Site-level DP-FedAvg (McMahan et al., ICLR 2018): the protected unit is one site's whole data
set. ``fedbio.federation`` calls these; nothing here imports NVFlare.
"""
