"""Printing a run's metrics as a short table (and, under DP, its epsilon)."""

from __future__ import annotations


def _fmt(scores: dict | None, task_type: str) -> str:
    if not scores:
        return "-"
    if task_type == "classification":
        mcc = f"  MCC {scores['mcc']:.3f}" if scores.get("mcc") is not None else ""
        return f"acc {100 * scores['accuracy']:5.1f} %  macro-F1 {scores['macro_f1']:.3f}{mcc}"
    if task_type == "multitask":
        per = scores.get("per_task") or {}
        tasks = ", ".join(f"{t} {v['rmse']:.3g}" for t, v in per.items())
        return f"MSE (sd units) {scores['mse_std']:.3f}  Spearman {scores['spearman']:.3f}  RMSE: {tasks}"
    return f"RMSE {scores['rmse']:.3g}  Pearson {scores['pearson']:.3f}  Spearman {scores['spearman']:.3f}"


def print_metrics(metrics: dict) -> None:
    """Per-site and delivered-model scores on the test set (and setHARD)."""
    kind = metrics["task_type"]
    print(f"{'':22} {'# train':>8}  test")
    fluid = metrics.get("fluid") if metrics["mode"] == "fluid" else None
    for site, scores in metrics["per_site"].items():
        name = f"{site} (teacher)" if fluid else site
        print(f"{name:22} {metrics['n_train'].get(site, ''):>8}  {_fmt(scores.get('test'), kind)}")
    if fluid and fluid.get("hybrid_mean"):
        print(f"{'hybrids (mean)':22} {'':>8}  {_fmt(fluid['hybrid_mean']['test'], kind)}")
    label = "mean" if metrics["mode"] == "local" else "fluid student" if fluid else metrics["mode"]
    print(f"{label:22} {'':>8}  {_fmt(metrics['test'], kind)}")
    if metrics.get("test_hard"):
        print(f"{'setHARD':22} {'':>8}  {_fmt(metrics['test_hard'], kind)}")
    if kind == "multitask":
        print("RMSE per task in original units (mean of the models scored on that task); "
              "MSE in units of each task's training sd")
    homes = (metrics.get("deployment") or {}).get("site_records")
    if homes:
        print(f"each site keeps its own records (audit, predictions) in its kit: {next(iter(homes.values()))}, …")
    if metrics.get("majority_rate") is not None:
        print(f"majority class rate on test: {100 * metrics['majority_rate']:.1f} %")
    privacy = metrics.get("privacy") or {}
    if privacy.get("clip") is not None:
        eps = privacy.get("epsilon")
        print(f"privacy: site-level DP-FedAvg, epsilon {'inf (z = 0: none)' if eps is None else f'{eps:.3g}'} "
              f"at delta {privacy['delta']:g} after {privacy['rounds']} rounds (noise multiplier "
              f"{privacy['noise_multiplier']:.3g}, clip {privacy['clip']:g}, noise added at the "
              f"{privacy['where']}; sites send no scores of their own)")
    if privacy.get("dp_sgd"):
        sites = privacy["dp_sgd"]["sites"]
        each = ", ".join(f"{name} {'inf' if r['epsilon'] is None else format(r['epsilon'], '.3g')} "
                         f"(z {r['noise_multiplier']:.3g}, {r['steps']} steps, q {r['sample_rate']:.3g})"
                         for name, r in sites.items())
        print(f"privacy: record-level DP-SGD (Opacus), clip {privacy['dp_sgd']['clip']:g}, delta "
              f"{privacy['delta']:g}; epsilon per model: {each}")
    filt = privacy.get("update_filter")
    if filt:
        kept = filt.get("received_nonzero_max_fraction")
        what = (f"selective sharing, top {100 * filt['fraction']:g} % of each update"
                + (f" clipped to ±{filt['clip']:g}" if filt.get("clip") else "")
                if filt["kind"] == "share" else
                f"NVFlare's SVT (fraction {filt['fraction']:g}, gamma {filt['gamma']:g}), epsilon "
                f"{filt['epsilon_total']:.4g} over the run (NVFlare's ledger, summed over rounds)")
        cos = filt.get("cosine_mean")
        print(f"privacy: {what}; the server received at most "
              f"{'?' if kept is None else f'{100 * kept:.3g}'} % non-zero entries; cosine to the "
              f"true update {'?' if cos is None else f'{cos:.3f}'} (mean); no guarantee on its own: "
              "measure it with fedbio attack membership RUN")
