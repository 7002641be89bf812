"""Module names of the original repository, kept so that its configs resolve."""
