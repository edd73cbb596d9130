"""The pages ``serve`` adds to the web server: the status page, ``/api/v1/results``,
``/config`` and the bounded history of rounds they show. They read the model, never the
terminal report.
"""
