"""One owner per file format: each module writes, reads and validates its own file.

========================== ===================================================
module                     file
========================== ===================================================
:mod:`.prepared`           the prepared file (ROI-masked betas, train/test split)
:mod:`.feature_store`      feature stores (one HDF5 per dataset, model, feature)
:mod:`.decoder_file`       decoder files (ridge weights, test predictions)
:mod:`.recon_index`        the reconstruction folder (PNGs, ``index.csv``)
:mod:`.run_layout`         the run folder (where each of the above lives)
:mod:`.predictions`        reading features to reconstruct from (decoder file or store)
:mod:`.encoding_results`   the encoding results (per-voxel scores of each feature space)
:mod:`.partitions`         the pieces of a split output (shards, parts) and their checks
:mod:`.provenance`         the study a file was made from, and the same-study check
========================== ===================================================

Nothing outside this package opens these files with h5py. NSD's own files are read by
:mod:`brain2image.sources.nsd`.
"""

from .decoder_file import DecoderFile
from .feature_store import FeatureStore, feature_store_path, merge_stores
from .predictions import read_predictions
from .prepared import PreparedData, PreparedWriter
from .recon_index import ReconFolder
from .run_layout import RUN_FILES, RunLayout

__all__ = ["DecoderFile", "FeatureStore", "PreparedData", "PreparedWriter", "RUN_FILES", "ReconFolder", "RunLayout",
           "feature_store_path", "merge_stores", "read_predictions"]
