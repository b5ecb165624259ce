"""RM ensembles' figures: best-of-n gold / proxy / gap against KL_bon per objective, member accuracy, disagreement
against ‖y‖, UWO's λ sweep, and (with PPO) gold and proxy against the exact KL. Pure functions of a Result."""

from __future__ import annotations


def curve_table(hist, metric: str):
    """Mean over seeds of ``metric``: a frame indexed by n (the BoN step), one column per series."""
    rows = hist[hist["metric"] == metric]
    return rows.groupby(["series", "step"])["value"].mean().unstack("series")


def kl_figure(result, metric: str, title: str, ylabel: str):
    """``metric`` against KL_bon(n) per series; 0%-noise series dashed."""
    from labkit import viz
    from labkit.substrates.rlhf import best_of_n_kl

    table = curve_table(result.history, metric)
    order = [s for s in result.extras["series"] if s in table.columns]
    fig = viz.lines(
        [best_of_n_kl(int(n)) for n in table.index],
        {s: table[s].values for s in order},
        mode="lines+markers",
        title=title,
        xlabel="KL_bon(n) = log n − (n−1)/n  (nats)",
        ylabel=ylabel,
    )
    colours = viz.color_map([s.split(" · ")[0] for s in order])
    for trace in fig.data:
        trace.line.update(color=colours[trace.name.split(" · ")[0]], dash="dash" if " · " in trace.name else None)
    return fig


def ppo_figure(hist, metric: str, title: str, ylabel: str):
    """``metric`` against the exact KL along PPO training, one line per (objective, β_KL); β_KL > 0 dashed."""
    import plotly.graph_objects as go

    from labkit import viz

    means = hist[hist["metric"].isin([metric, "ppo_kl"])].groupby(["series", "metric", "step"])["value"].mean()
    names = list(dict.fromkeys(hist.loc[hist["metric"] == metric, "series"]))
    colours = viz.color_map([n.split(" β")[0] for n in names])
    fig = viz.lines([], {}, title=title, xlabel="KL(π ‖ N(0, I)) (nats)", ylabel=ylabel)
    for n in names:
        fig.add_trace(
            go.Scatter(
                x=means[n]["ppo_kl"].values,
                y=means[n][metric].values,
                mode="lines",
                name=n,
                line={"color": colours[n.split(" β")[0]], "dash": None if n.endswith("β_KL=0") else "dash"},
            )
        )
    return fig


def make_figures(result) -> dict:
    from labkit import viz
    from labkit.substrates.rlhf import best_of_n_kl

    x = result.extras
    figs = {
        "gold_vs_kl": kl_figure(
            result,
            "gold_reward",
            "Best-of-n: gold reward against KL (mean over data seeds; dashed: 0% label noise)",
            "E[r*(best of n)]",
        ),
        "proxy_vs_kl": kl_figure(
            result, "proxy_z", "Best-of-n: the optimised (proxy) score, z-scored over the pool", "E[proxy_z]"
        ),
        "gap": kl_figure(result, "gap", "Over-optimisation gap: proxy_z − gold_z (pool-std units)", "gap"),
        "rm_accuracy": viz.bars(
            x["accuracy_bars"],
            title="Per-member accuracy on held-out pairs ordered by r*"
            " (typical: N(0, I); tail: N(0, 4I)); dots: data seeds",
            ylabel="accuracy",
        ),
        "disagreement": viz.lines(
            x["disagreement"]["norm"],
            {"std across members": x["disagreement"]["std"]},
            mode="markers",
            title="Ensemble disagreement grows in the tails (first data seed)",
            xlabel="‖y‖",
            ylabel="std_i of standardised R_i(y)",
        ),
        "uwo_lambda": viz.lines(
            [best_of_n_kl(n) for n in x["ns"]],
            {f"UWO λ={k}": v for k, v in x["lam_sweep"].items()},
            mode="lines+markers",
            title="UWO: gold reward against KL_bon for several λ (mean over data seeds)",
            xlabel="KL_bon(n) (nats)",
            ylabel="E[r*(best of n)]",
        ),
    }
    if "ppo_final" in x:
        figs["ppo_gold_vs_kl"] = ppo_figure(
            result.history,
            "ppo_gold",
            "PPO: gold reward against KL(π‖N(0, I)) along training (mean over seeds)",
            "E_π[r*] (exact)",
        )
        figs["ppo_proxy_vs_kl"] = ppo_figure(
            result.history, "ppo_proxy", "PPO: the optimised proxy score against KL", "mean proxy score of the batch"
        )
    return figs
