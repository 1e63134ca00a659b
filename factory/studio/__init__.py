"""The template studio: edit a prompt template, render it on seed samples, run it, compare, save versions.

`preview` does the work (shared by the web app and `mmsynth prompts preview/diff`), `versions` saves new
versions, `app` serves the local web page.
"""
