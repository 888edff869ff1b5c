"""How `rollwise/examples/sentiment_weights.json` was made: a tiny logistic regression, trained here.

This is the provenance of the example model's weights, kept beside its tests so that anyone can check
it: `python tests/examples/sentiment_training.py` retrains on the hand-written corpus below and rewrites
the JSON file, and `test_model_server.py::test_shipped_weights_are_reproducible` retrains in memory and
compares. Training is deterministic (full-batch gradient descent, fixed order, no randomness), so the
same corpus always yields the same weights.

Features are binary "word present" indicators over `model_server.tokenize` (the server's own tokenizer),
so training and serving can never disagree on what a word is. Nothing here is imported by the package.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rollwise.examples.model_server import tokenize

POSITIVE = (
    "I love this product, it works great",
    "Excellent quality and fast delivery",
    "The service was wonderful and the staff were friendly",
    "Absolutely fantastic experience, highly recommend",
    "This is the best purchase I have made this year",
    "Great value for the money",
    "The movie was brilliant and the acting superb",
    "I am very happy with the results",
    "Amazing performance, smooth and reliable",
    "Delightful food and a lovely atmosphere",
    "The new version is faster and more stable",
    "Support answered quickly and solved my problem",
    "Beautiful design, easy to use",
    "Works perfectly, no complaints at all",
    "A pleasant surprise, better than expected",
    "Outstanding battery life and a gorgeous screen",
    "I enjoyed every minute of it",
    "Friendly people and great prices",
    "The update fixed everything, awesome job",
    "Solid build, comfortable and well made",
    "Impressive speed and accurate predictions",
    "Nice, clean and cozy room",
    "Superb customer care, thank you",
    "It exceeded my expectations, truly excellent",
    "Good product, would buy again",
    "The deployment went smoothly and everyone was pleased",
    "Charming story with a happy ending",
    "Helpful documentation and a great community",
    "Fast, reliable and wonderful",
    "Perfect gift, my kids love it",
    "What a joy to use, simply the best",
    "The rollout was flawless and quick",
)

NEGATIVE = (
    "I hate this product, it broke after a day",
    "Terrible quality and slow delivery",
    "The service was awful and the staff were rude",
    "Absolutely horrible experience, avoid it",
    "This is the worst purchase I have made this year",
    "A waste of money",
    "The movie was boring and the acting poor",
    "I am very disappointed with the results",
    "Laggy performance, it crashes constantly",
    "Bland food and a noisy atmosphere",
    "The new version is slower and buggy",
    "Support never answered and ignored my problem",
    "Ugly design, confusing to use",
    "Stopped working, nothing but complaints",
    "An unpleasant surprise, worse than expected",
    "Poor battery life and a dim screen",
    "I regretted every minute of it",
    "Unfriendly people and overpriced",
    "The update broke everything, useless",
    "Cheap build, uncomfortable and badly made",
    "Frustrating delays and wrong predictions",
    "Dirty, smelly and cramped room",
    "Bad customer care, never again",
    "It failed my expectations, truly dreadful",
    "Bad product, would not buy again",
    "The deployment failed and everyone was angry",
    "Dull story with a sad ending",
    "Missing documentation and a hostile community",
    "Slow, unreliable and annoying",
    "Defective gift, my kids hate it",
    "What a pain to use, simply the worst",
    "The rollout was broken and painfully slow",
)

EPOCHS = 400
LEARNING_RATE = 1.0
L2 = 0.002
MIN_ABS_WEIGHT = 0.01
"""Weights smaller than this are dropped from the file (they do not change any prediction)."""
DECIMALS = 4


def train() -> dict[str, object]:
    """Fit bias + one weight per word by full-batch gradient descent on the log loss (L2-regularised).

    Returns the JSON document the server loads: {"bias", "weights", "provenance", ...}.
    """
    samples = [(frozenset(tokenize(t)), 1.0) for t in POSITIVE]
    samples += [(frozenset(tokenize(t)), 0.0) for t in NEGATIVE]
    vocabulary = sorted({w for words, _ in samples for w in words})
    weights = dict.fromkeys(vocabulary, 0.0)
    bias = 0.0
    n = len(samples)
    for _ in range(EPOCHS):
        grad = dict.fromkeys(vocabulary, 0.0)
        grad_bias = 0.0
        for words, y in samples:
            z = bias + sum(weights[w] for w in words)
            error = 1.0 / (1.0 + math.exp(-z)) - y
            grad_bias += error
            for w in words:
                grad[w] += error
        bias -= LEARNING_RATE * grad_bias / n
        for w in vocabulary:
            weights[w] -= LEARNING_RATE * (grad[w] / n + L2 * weights[w])
    kept = {w: round(v, DECIMALS) for w, v in weights.items() if abs(v) >= MIN_ABS_WEIGHT}
    return {
        "format": "rollwise-bow-logreg/1",
        "provenance": (
            "Trained by tests/examples/sentiment_training.py: logistic regression over binary word "
            f"features, {len(POSITIVE)} positive and {len(NEGATIVE)} negative hand-written sentences, "
            f"{EPOCHS} epochs of full-batch gradient descent, learning rate {LEARNING_RATE}, L2 {L2}; "
            f"weights below {MIN_ABS_WEIGHT} dropped, values rounded to {DECIMALS} decimals."
        ),
        "tokenizer": "lowercase, regex [a-z]+(?:'[a-z]+)?, each distinct word counted once",
        "bias": round(bias, DECIMALS),
        "weights": dict(sorted(kept.items())),
    }


def main() -> int:
    target = Path(__file__).resolve().parents[2] / "src/rollwise/examples/sentiment_weights.json"
    document = train()
    target.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    weights = document["weights"]
    assert isinstance(weights, dict)
    print(f"wrote {target} ({len(weights)} word weights)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
