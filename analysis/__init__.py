"""Making sense of the data: EXSY processing and exchange/diffusion fits, Arrhenius, cycling summaries, plots."""
