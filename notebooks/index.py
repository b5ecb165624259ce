# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -papermill
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # labkit: the methods
#
# Thirty recent machine-learning methods, one notebook each. Every notebook explains the idea, implements it in
# `labkit`, trains it next to its baseline, plots what happens and checks, honestly, whether the paper's main
# claim shows up at teaching scale. The table below is read from the registry (`labkit.core.registry`), the same
# list the `labkit` command and the Panel app use. Open a notebook and run it top to bottom: the `quick` preset
# takes about 30 seconds on a laptop.

# %%
from IPython.display import Markdown

import labkit
from labkit.core.registry import METHODS


def link(m):
    return f"[{m.short}]({m.notebook.split('/')[-1].replace('.py', '.ipynb')})" if m.available else m.short


rows = [f"| {m.id:02d} | {link(m)} | [{m.title}]({m.arxiv_url}) | {m.family} |"
        for m in METHODS]
Markdown("| # | method | paper | family |\n| --- | --- | --- | --- |\n" + "\n".join(rows))

# %% tags=["nbval-check-output"]
print(f"{len(labkit.available_methods())} of {len(METHODS)} methods are available:",
      ", ".join(m.slug for m in labkit.available_methods()))

# %% [markdown]
# Elsewhere: `panel serve widgets/app.py` for the dashboard, `labkit run SLUG` for a headless run of a notebook,
# `labkit report --execute` for an HTML report of every claim check.
