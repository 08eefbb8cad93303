"""The evaluation: metric table (PixCorr, SSIM, identification, distances) in registered feature spaces."""
