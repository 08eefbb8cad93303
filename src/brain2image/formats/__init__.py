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
========================== ===================================================

Nothing outside this package opens these files with h5py. NSD's own files are read by
:mod:`brain2image.nsd`.
"""
