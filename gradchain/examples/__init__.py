"""Examples that ship with gradchain: the bundled digits, demo models, test problems and the main jobs.

Nothing in the library imports this package (``tests/test_imports.py`` checks it); it is built
only from gradchain's public API, the way a user's own code is.

- :mod:`~gradchain.examples.digits`: the UCI optical digits (bundled, no download) as a
  :class:`gradchain.Split`.
- :mod:`~gradchain.examples.models`: a plain-JAX MLP and the small digits CNN with its augmentation.
- :mod:`~gradchain.examples.problems`: Rosenbrock, an ill-conditioned quadratic, a saddle, logistic
  regression (the second-order methods' test functions).
- :mod:`~gradchain.examples.optimizer_demo`: ``python -m gradchain demo``, every optimizer of the lecture.
- :mod:`~gradchain.examples.digits_recipe`: ``python -m gradchain recipe``, the main job.
"""
