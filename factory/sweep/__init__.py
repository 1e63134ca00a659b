"""`mmsynth sweep`: generate the data of several recipe variants and rank them by the gain it buys.

`spec` reads the sweep file, `variants` expands its axes into runnable recipes, `measure` generates
every variant through one response cache and measures them on equal terms (successive halving),
`report` ranks them with paired confidence intervals and writes the winner out.
"""
