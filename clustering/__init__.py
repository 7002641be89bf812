"""Clustering: pseudo-labels from embeddings.

k-means on CPU or GPU (``kmeans``), Ward AHC of its centroids (``ahc``), NMI / purity / cluster sizes
against the true speakers when keys carry them (``report``), and the whole pseudo-labelling run of
``pseudo_labeling.py`` (``pseudo_labels``). Imports ``utils`` and ``dataio``.
"""
from clustering.ahc import AHCResult, MemoryBudgetError, check_ward_memory, ward_ahc
from clustering.kmeans import KMeansResult, kmeans
from clustering.report import cluster_sizes, nmi, purity, speakers_from_keys

__all__ = ["AHCResult", "KMeansResult", "MemoryBudgetError", "check_ward_memory", "cluster_sizes", "kmeans",
           "nmi", "purity", "speakers_from_keys", "ward_ahc"]
