//! The batches models take, as plain host data: token sequences with class labels
//! ([`TextBatch`]), token sequences for next-token prediction ([`LmBatch`]), and images
//! ([`ImageBatch`]). Built by the tokenizer and dataset code, uploaded by a model.

use crate::ops::cross_entropy::IGNORE_INDEX;

/// One batch of token sequences, row-major `[batch, seq]`.
#[derive(Clone, Debug)]
pub struct TextBatch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<u32>,
    /// 1 = real token, 0 = padding.
    pub mask: Vec<u32>,
    /// Segment ids (BERT); zeros when absent.
    pub types: Option<Vec<u32>>,
    /// One class id per sequence; needed for the loss and the backward pass.
    pub labels: Option<Vec<u32>>,
}

/// A batch of token sequences `[batch, seq]` (right padding marked by `mask` = 0). The loss is
/// next-token cross-entropy over positions whose next token is real.
#[derive(Clone, Debug)]
pub struct LmBatch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
}

impl LmBatch {
    /// Next-token targets: position `t` predicts `ids[t + 1]` when that token is real;
    /// otherwise (last position, padding) it is ignored.
    pub fn targets(&self) -> Vec<u32> {
        let (b, t) = (self.batch, self.seq);
        (0..b * t)
            .map(|i| {
                let next = i + 1;
                if i % t + 1 < t && self.mask[next] != 0 {
                    self.ids[next]
                } else {
                    IGNORE_INDEX
                }
            })
            .collect()
    }
}

/// The KL terms' row weights for a batch's `targets`: 1 / (scored tokens) on each row with a
/// target, 0 elsewhere (padding and each sequence's last position), so that they sum to 1.
pub fn row_weights(targets: &[u32]) -> Vec<f32> {
    let n = targets.iter().filter(|&&x| x != IGNORE_INDEX).count().max(1) as f32;
    targets.iter().map(|&x| if x != IGNORE_INDEX { 1.0 / n } else { 0.0 }).collect()
}

/// One batch of images, `[batch, channels, height, width]` already resized and normalised.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    pub batch: usize,
    pub pixels: Vec<f32>,
    pub labels: Option<Vec<u32>>,
}
