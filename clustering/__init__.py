"""Clustering for pseudo-labels: k-means, Ward AHC of its centroids, and quality reports."""
from clustering.ahc import AHCResult, MemoryBudgetError, check_ward_memory, ward_ahc
from clustering.kmeans import KMeansResult, kmeans
from clustering.report import cluster_sizes, nmi, purity, speakers_from_keys

__all__ = ["AHCResult", "KMeansResult", "MemoryBudgetError", "check_ward_memory", "cluster_sizes", "kmeans",
           "nmi", "purity", "speakers_from_keys", "ward_ahc"]
