"""Numbers that are NOT ours: the guide's claimed table and published references.

The report prints them in separate, labelled columns beside our measurements, never as results.
Sources are listed in the project's reference-results notes; "via" marks a secondary citation.
"""

from __future__ import annotations

__all__ = ["GUIDE_CLAIMS", "MNIST_PUBLISHED", "PUBLISHED", "TRIVIAL"]

#: The guide's benchmark table (section 5): effective length, "perplexity" (really BPC), explosions
#: per epoch. No setup, budget or source is given for these numbers.
GUIDE_CLAIMS: dict[str, dict[str, float]] = {
    "vanilla": {"effective_length": 20, "bpc": 1.57, "explosions_per_epoch": 47},
    "lstm": {"effective_length": 200, "bpc": 1.20, "explosions_per_epoch": 0},
    "lstm-ln-clip": {"effective_length": 500, "bpc": 1.15, "explosions_per_epoch": 0},
    "indrnn-relu": {"effective_length": 1000, "bpc": 1.18, "explosions_per_epoch": 2},
}

#: Published PTB-char test BPC and adding-problem findings (other sizes and budgets than ours).
PUBLISHED: dict[str, dict[str, str]] = {
    "vanilla": {
        "ptb_bpc": "1.55 tanh RNN (Krueger & Memisevic 2016, via IndRNN); 1.48 tuned (Bai et al. 2018)",
        "adding": "tanh RNN fails from T~100-150",
    },
    "lstm": {
        "ptb_bpc": "1.36 unregularised (Bai et al. 2018); 1.312 1x1000 (Ha et al. 2016)",
        "adding": "solves T~400, fails T=1000 (uRNN, IndRNN papers)",
    },
    "lstm-ln-clip": {"ptb_bpc": "1.267 LayerNorm LSTM 1x1000 (Ha et al. 2016)", "adding": "–"},
    "safe-lstm": {"ptb_bpc": "1.312 LSTM 1x1000 (Ha et al. 2016)", "adding": "–"},
    "indrnn-relu": {
        "ptb_bpc": "1.26 6-layer IndRNN, T=50 (Li et al. 2018)",
        "adding": "solves T=1000 and 5000 (Li et al. 2018)",
    },
    "gru": {"ptb_bpc": "–", "adding": "T=600: MSE 5.3e-5 (Bai et al. 2018)"},
}

#: Trivial baselines of the synthetic tasks (defined in the task classes; shown for orientation).
TRIVIAL: dict[str, str] = {
    "adding": "always predict 1: MSE 1/6 ~ 0.167; solved at MSE <= 0.01",
    "copy": "memoryless: 10 ln 8 / (T + 20) nats; solved below a tenth of that",
}

#: Published sequential / permuted MNIST test accuracy (%), one pixel per step.
MNIST_PUBLISHED: dict[str, dict[str, str]] = {
    "vanilla": {"smnist": "35.0 tanh RNN", "pmnist": "35.0 tanh RNN"},
    "lstm": {"smnist": "98.9 LSTM", "pmnist": "90.2 LSTM"},
    "indrnn-relu": {"smnist": "99.0 IndRNN 6x128", "pmnist": "96.0 IndRNN 6x128"},
    "lstm-ln-clip": {"smnist": "99.0 BN-LSTM (closest)", "pmnist": "95.4 BN-LSTM (closest)"},
}
