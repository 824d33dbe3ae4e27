//! Fill-in-the-middle for the GPT (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in
//! the Middle", arXiv:2207.14255): a left-to-right language model that also writes the text *between* a
//! prefix and a suffix, learned by moving the middle of some training windows to their end.
//!
//! Four sentinel tokens follow the tokenizer's V ids: PRE = V, SUF = V + 1, MID = V + 2, EOT = V + 3 (the
//! GPT's start-of-text id then is V + 4). With probability `model.fim` a training window x_0 … x_{T−1} is
//! rearranged before it is scored ("context-level FIM" in the PSM order): its first D = T − 4 tokens are cut
//! at three points i ≤ j ≤ k (three uniforms on 0 … D, sorted),
//!
//! ```text
//! prefix = x_<i,  middle = x_i … x_{j−1},  suffix = x_j … x_{k−1},  rest = x_k … x_{D−1}
//! window  →  PRE prefix SUF suffix MID middle EOT rest      (T tokens; x_D … x_{T−1} are dropped)
//! ```
//!
//! and every position is scored as usual (the sentinels included), so one model learns both the ordinary
//! left-to-right distribution and p(middle, EOT | prefix, suffix). To fill a gap, the model continues the
//! prompt [PRE prefix SUF suffix MID] until it writes EOT. The third cut matters: with the suffix always
//! running to the end of the window, prefix + suffix + middle would always be D tokens, and a small model
//! learns to count — it then writes middles of the length that completes D, whatever the text says
//! (observed: a test model trained that way continued "0 1 2 ▢ 5 6 7" with six symbols). With a random
//! end of the suffix (the rest following EOT continues the text after it), the count says nothing.
//!
//! The paper's joint PSM + SPM training and its character-level cuts are left out: cuts fall between
//! tokens, so with BPE a gap should start and end at token boundaries of the joint text (with bytes every
//! position is one).

use crate::rng::Rng;
use crate::{Error, Result};

/// Number of sentinel ids a FIM-trained model adds after the tokenizer's vocabulary.
pub const SENTINELS: usize = 4;

/// The sentinel ids of a vocabulary of V tokenizer ids: PRE, SUF, MID, EOT = V … V + 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sentinels {
    /// Starts the prefix.
    pub pre: u32,
    /// Starts the suffix.
    pub suf: u32,
    /// Starts the middle: what the model writes after it is the gap's text.
    pub mid: u32,
    /// Ends the middle.
    pub eot: u32,
}

impl Sentinels {
    /// The sentinels after a tokenizer of `vocab` ids.
    pub fn after(vocab: usize) -> Self {
        let v = vocab as u32;
        Self {
            pre: v,
            suf: v + 1,
            mid: v + 2,
            eot: v + 3,
        }
    }
}

/// The error of a `model` that was not trained to fill in the middle.
pub fn not_trained(model: &str) -> Error {
    Error::invalid(
        "model",
        format!("this {model} was not trained to fill in the middle; train one with model.fim = 0.5 (half the training windows rearranged)"),
    )
}

/// Checks a FIM rate (`model.fim`): the share of training windows rearranged, in [0, 1].
pub fn validate_rate(rate: f64) -> Result<()> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(Error::invalid(
            "model.fim",
            format!("{rate} must be in [0, 1]: the share of training windows rearranged for fill-in-the-middle (0 = off, 0.5 = the paper's rate)"),
        ))
    }
}

/// The PSM layout of `window` (T ≥ 4 tokens, D = T − 4) cut at `i ≤ j ≤ k ≤ D` (clamped to that order):
/// PRE x_<i SUF x_j…x_{k−1} MID x_i…x_{j−1} EOT x_k…x_{D−1}, T tokens.
pub fn rearrange(window: &[u32], cuts: [usize; 3], s: Sentinels) -> Vec<u32> {
    let d = window.len().saturating_sub(SENTINELS);
    let i = cuts[0].min(d);
    let j = cuts[1].clamp(i, d);
    let k = cuts[2].clamp(j, d);
    let mut out = Vec::with_capacity(window.len());
    out.push(s.pre);
    out.extend_from_slice(&window[..i]);
    out.push(s.suf);
    out.extend_from_slice(&window[j..k]);
    out.push(s.mid);
    out.extend_from_slice(&window[i..j]);
    out.push(s.eot);
    out.extend_from_slice(&window[k..d]);
    out
}

/// Rearranges each of the `rows` windows of `t` tokens in `ids` (row-major) with probability `rate`, the
/// cuts drawn from `rng` (nothing is drawn when `rate` is 0, so such training is unchanged bit for bit).
pub fn augment(ids: &mut [u32], t: usize, rate: f64, s: Sentinels, rng: &mut Rng) {
    if rate <= 0.0 || t < SENTINELS {
        return;
    }
    let d = t - SENTINELS;
    for row in ids.chunks_mut(t) {
        if rng.uniform_f64() >= rate {
            continue;
        }
        let mut cuts = [rng.below(d + 1), rng.below(d + 1), rng.below(d + 1)];
        cuts.sort_unstable();
        let fim = rearrange(row, cuts, s);
        row.copy_from_slice(&fim);
    }
}

/// The prompt [PRE prefix SUF suffix MID] that fits a context of `context` tokens after the start-of-text
/// id with room for `middle` generated tokens: the prefix keeps its end and the suffix its start, each at
/// least half of the room when both are long. An error when not even the sentinels and one middle token fit.
pub fn prompt(
    prefix: &[u32],
    suffix: &[u32],
    middle: usize,
    context: usize,
    s: Sentinels,
) -> Result<Vec<u32>> {
    let fixed = 3 + middle.max(1);
    if context < fixed {
        return Err(Error::invalid(
            "max_tokens",
            format!(
                "{middle} middle tokens and the 3 sentinels do not fit the model's context of {context} tokens; ask for at most {} tokens",
                context.saturating_sub(3)
            ),
        ));
    }
    let room = context - fixed;
    let half = room / 2;
    let keep_suffix = suffix.len().min(room - prefix.len().min(half));
    let keep_prefix = prefix.len().min(room - keep_suffix);
    let mut out = Vec::with_capacity(keep_prefix + keep_suffix + 3);
    out.push(s.pre);
    out.extend_from_slice(&prefix[prefix.len() - keep_prefix..]);
    out.push(s.suf);
    out.extend_from_slice(&suffix[..keep_suffix]);
    out.push(s.mid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Sentinels = Sentinels {
        pre: 100,
        suf: 101,
        mid: 102,
        eot: 103,
    };

    #[test]
    fn a_rearranged_window_holds_prefix_suffix_middle_in_psm_order() {
        let w: Vec<u32> = (0..12).collect(); // D = 8: x_8 … x_11 are dropped
        assert_eq!(
            rearrange(&w, [2, 5, 8], S),
            vec![100, 0, 1, 101, 5, 6, 7, 102, 2, 3, 4, 103]
        );
        // the rest after EOT continues the text after the suffix
        assert_eq!(
            rearrange(&w, [2, 4, 6], S),
            vec![100, 0, 1, 101, 4, 5, 102, 2, 3, 103, 6, 7]
        );
        // empty prefix, middle, suffix or rest; cuts out of order are clamped
        assert_eq!(
            rearrange(&w, [0, 0, 8], S),
            vec![100, 101, 0, 1, 2, 3, 4, 5, 6, 7, 102, 103]
        );
        assert_eq!(
            rearrange(&w, [8, 8, 8], S),
            vec![100, 0, 1, 2, 3, 4, 5, 6, 7, 101, 102, 103]
        );
        assert_eq!(
            rearrange(&w, [0, 8, 8], S),
            vec![100, 101, 102, 0, 1, 2, 3, 4, 5, 6, 7, 103]
        );
        assert_eq!(
            rearrange(&w, [0, 0, 0], S),
            vec![100, 101, 102, 103, 0, 1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(rearrange(&w, [5, 2, 1], S), rearrange(&w, [5, 5, 5], S));
    }

    #[test]
    fn augmentation_keeps_every_token_once_and_rearranges_at_the_rate() {
        let (t, rows) = (20, 2000);
        let orig: Vec<u32> = (0..rows * t).map(|k| (k % t) as u32).collect();
        let mut ids = orig.clone();
        let mut rng = Rng::new(3);
        augment(&mut ids, t, 0.5, S, &mut rng);
        let mut moved = 0;
        let mut cuts = vec![0usize; t - SENTINELS + 1];
        for (row, before) in ids.chunks(t).zip(orig.chunks(t)) {
            if row == before {
                continue;
            }
            moved += 1;
            // the first D tokens, each once, and the four sentinels in PSM order
            let mut kept: Vec<u32> = row.iter().copied().filter(|&x| x < 100).collect();
            kept.sort_unstable();
            assert_eq!(kept, (0..(t - SENTINELS) as u32).collect::<Vec<_>>());
            let pos: Vec<usize> = [S.pre, S.suf, S.mid, S.eot]
                .iter()
                .map(|s| row.iter().position(|x| x == s).unwrap())
                .collect();
            assert!(pos[0] == 0 && pos[0] < pos[1] && pos[1] < pos[2] && pos[2] < pos[3]);
            // after EOT the text goes on from where the suffix ended, up to x_{D−1}
            let rest = &row[pos[3] + 1..];
            assert!(rest.windows(2).all(|w| w[1] == w[0] + 1));
            assert!(rest.last().is_none_or(|&x| x as usize == t - SENTINELS - 1));
            cuts[pos[1] - 1] += 1; // the prefix length i
        }
        // rate 0.5 on 2000 windows: 1000 ± 5σ (σ ≈ 22)
        assert!((890..=1110).contains(&moved), "{moved}");
        // i = min of three uniforms on 0 … D: P(i = 0) = 1 − (D / (D + 1))³ ≈ 0.166 for D = 16
        let p0 = cuts[0] as f64 / moved as f64;
        assert!((0.12..0.21).contains(&p0), "{p0}");
        // rate 0 draws nothing and changes nothing
        let mut same = orig.clone();
        let mut r0 = Rng::new(3);
        augment(&mut same, t, 0.0, S, &mut r0);
        assert_eq!(same, orig);
        assert_eq!(r0.next_u64(), Rng::new(3).next_u64());
    }

    #[test]
    fn prompts_keep_the_text_nearest_the_gap_and_leave_room_for_the_middle() -> Result<()> {
        let p: Vec<u32> = (0..10).collect();
        let q: Vec<u32> = (20..30).collect();
        // everything fits
        assert_eq!(
            prompt(&p[..2], &q[..2], 4, 64, S)?,
            vec![100, 0, 1, 101, 20, 21, 102]
        );
        // context 16, middle 5: room 8, the prefix keeps its last 4 and the suffix its first 4
        assert_eq!(
            prompt(&p, &q, 5, 16, S)?,
            vec![100, 6, 7, 8, 9, 101, 20, 21, 22, 23, 102]
        );
        // a short suffix leaves its share to the prefix
        assert_eq!(
            prompt(&p, &q[..1], 5, 16, S)?,
            vec![100, 3, 4, 5, 6, 7, 8, 9, 101, 20, 102]
        );
        assert!(prompt(&p, &q, 14, 16, S).is_err());
        assert!(validate_rate(1.5).is_err() && validate_rate(f64::NAN).is_err());
        validate_rate(0.5)
    }
}
