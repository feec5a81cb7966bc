"""The audit's one forward pass: pooled features, probabilities and raw CAMs of a run's model on
grayscale images (tests stand a model in by replacing `forward` here)."""
from __future__ import annotations

import numpy as np


def forward(loaded, grays, batch: int = 32, tick=None):
    """Pooled features (N, K), probabilities (N, C) and raw CAMs at feature resolution (N, C, h, w);
    tick(done) after each batch."""
    import torch

    from ...explain.cam import cam_from_features  # torch: imported when the audit runs

    feats, probs, cams = [], [], []
    model = loaded.model
    with torch.no_grad():
        for i in range(0, len(grays), batch):
            x = torch.cat([loaded.tensor(g) for g in grays[i:i + batch]])
            f = model.forward_features(x).float()
            pooled = model.forward_head(f, pre_logits=True)
            feats.append(pooled.cpu().numpy())
            probs.append(torch.sigmoid(model.classifier(pooled)).cpu().numpy())
            cams.append(cam_from_features(model, f).cpu().numpy())
            if tick:
                tick(min(i + batch, len(grays)))
    if not feats:
        return np.zeros((0, model.num_features)), np.zeros((0, model.num_classes)), np.zeros((0, model.num_classes, 1,
                                                                                              1))
    return np.concatenate(feats), np.concatenate(probs), np.concatenate(cams)
