"""The run viewer (`mmsynth view`): a local web page over one run folder, or two side by side.

`index` keeps a small in-memory index of a run's shards (no outputs, no images), `queries` filters, sorts,
pages and reads the rows of one page, `compare` pairs two runs by seed, `app` serves the page and its
JSON API.
"""
