"""What every embedder of our own must give: the vectors sentence-transformers gives for the same texts."""

from typing import Any

import numpy as np

from memory.config import bundled_embedder_path

TEXTS = [
    "The user is vegetarian.",
    "I just adopted a beagle called Max. Any tips?",
    "What's the café's naïve résumé? ÉCOLE 東京 🎉",
    "Caroline went to the LGBTQ support group on 7 May 2023 and said it was powerful.",
    "",
    "word " * 400,  # longer than MiniLM's 256 tokens: cut the way sentence-transformers cuts it
]


def assert_vectors_match_sentence_transformers(embedder: Any) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(bundled_embedder_path(), device="cpu")
    for text in TEXTS:
        ours = np.array(embedder.embed(text, "add"))
        theirs = reference.encode(text, normalize_embeddings=True)
        assert ours.shape == (384,)
        assert abs(float(np.linalg.norm(ours)) - 1.0) < 1e-5
        assert float(np.dot(ours, theirs)) > 0.9999, text[:40]
