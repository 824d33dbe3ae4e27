//! Metrics of energy-based models ([`EnergyBased`]): the log-likelihood −E(x) − log Ẑ with log Ẑ from several
//! independent AIS runs (their spread reported), and the test accuracy of an energy that is also a classifier
//! (JEM).

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::ais::{ais_log_partition, ais_report, AisConfig, AisPartition, PartitionBase};
use super::likelihood::{NllReport, DATA_STREAM};
use crate::data::{Dataset, Preprocessing};
use crate::model::EnergyBased;
use crate::rng::Rng;
use crate::{Error, Result};

/// Examples scored at once (the energies need no chains).
const BATCH: usize = 256;

/// The outcome of [`evaluate_energy_ais`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyAis {
    /// The report: −log p(x) = E(x) + log Ẑ, log Ẑ the mean of the runs' estimates.
    pub report: NllReport,
    /// Each run's estimate (run r uses seed `cfg.seed + r`).
    pub runs: Vec<AisPartition>,
    /// The mean of the runs' log Ẑ.
    pub log_z: f64,
    /// Their sample standard deviation (NaN for one run).
    pub log_z_spread: f64,
}

/// Scores the examples of `data` (take a [`Dataset::slice`] for fewer), preprocessed by `prep`, under the energy-based
/// `model`: log Z by `runs` independent AIS runs on the model's box ([`PartitionBase::Box`]; settings `cfg`, its
/// `obs_std` unused), then −log p(x) = E(x) + mean log Ẑ per example. Values outside the box are refused.
pub fn evaluate_energy_ais(
    model: &dyn EnergyBased,
    data: &Dataset,
    prep: &Preprocessing,
    cfg: &AisConfig,
    runs: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EnergyAis> {
    cfg.validate()?;
    if runs == 0 {
        return Err(Error::invalid("ais runs", "must be at least 1, got 0"));
    }
    let n = data.len();
    if n == 0 {
        return Err(Error::invalid("limit", "no examples to evaluate"));
    }
    let (lo, hi) = model.domain();
    let energy = |x: &candle_core::Tensor| model.energy(x, None);
    let mut estimates = Vec::with_capacity(runs);
    for r in 0..runs {
        let run = AisConfig {
            seed: cfg.seed.wrapping_add(r as u64),
            ..cfg.clone()
        };
        estimates.push(ais_log_partition(
            &energy,
            model.example_shape(),
            PartitionBase::Box { lo, hi },
            &run,
            device,
        )?);
        progress(r + 1, runs + 1);
    }
    let values: Vec<f64> = estimates.iter().map(|e| e.log_z).collect();
    let log_z = values.iter().sum::<f64>() / runs as f64;
    let spread = if runs > 1 {
        (values.iter().map(|v| (v - log_z).powi(2)).sum::<f64>() / (runs - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    let mut rng = Rng::stream(cfg.seed, DATA_STREAM);
    let mut nats = Vec::with_capacity(n);
    for start in (0..n).step_by(BATCH) {
        let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        let batch = data.batch(&idx, prep, &mut rng, device)?;
        let outside = model.outside_domain(&batch.x)?;
        if let Some((i, Some((mn, mx)))) = outside.iter().enumerate().find(|(_, o)| o.is_some()) {
            return Err(Error::invalid(
                "data",
                format!(
                    "example {} has values in [{mn}, {mx}], outside the model's box [{lo}, {hi}] (density 0)",
                    idx[i]
                ),
            ));
        }
        let e = model.energy(&batch.x, None)?.to_dtype(DType::F64)?;
        nats.extend(e.to_vec1::<f64>()?.into_iter().map(|e| e + log_z));
    }
    progress(runs + 1, runs + 1);
    let accept = estimates.iter().map(|e| e.accept_rate).sum::<f64>() / runs as f64;
    let note = format!(
        "log p(x) = −E(x) − log Ẑ; log Ẑ = {log_z:.3} nats is the mean of {runs} independent AIS runs ({}; spread \
         {spread:.3}), each the log of an unbiased estimate of Z, so a stochastic lower bound on log Z and the \
         likelihood an estimate that errs high by the gap; the standard error above is over the examples only; \
         HMC acceptance rate {accept:.2}",
        values
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let prefix = format!("AIS log Z on the box [{lo}, {hi}], {runs} runs of ");
    let report = ais_report(nats, &prefix, "", cfg, None, data, prep, note);
    Ok(EnergyAis {
        report,
        runs: estimates,
        log_z,
        log_z_spread: spread,
    })
}

/// The accuracy of an energy-based classifier (JEM) on the first `limit` examples of `data` (all if `None`):
/// (fraction correct, examples). Refused for a model that does not classify or data without labels.
pub fn classifier_accuracy(
    model: &dyn EnergyBased,
    data: &Dataset,
    prep: &Preprocessing,
    limit: Option<usize>,
    device: &Device,
) -> Result<(f64, usize)> {
    let n = limit.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        return Err(Error::invalid("limit", "no examples to evaluate"));
    }
    let mut rng = Rng::stream(0, DATA_STREAM);
    let mut correct = 0usize;
    for start in (0..n).step_by(BATCH) {
        let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        let batch = data.batch(&idx, prep, &mut rng, device)?;
        let Some(logits) = model.class_logits(&batch.x)? else {
            return Err(Error::Unsupported(format!(
                "model '{}' is not a classifier (jem is)",
                model.name()
            )));
        };
        let y = batch.labels.as_ref().ok_or_else(|| {
            Error::invalid("data", format!("'{}' has no class labels", data.name))
        })?;
        let hit = logits.argmax(1)?.eq(&y.to_dtype(DType::U32)?)?;
        correct += hit.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
    }
    Ok((correct as f64 / n as f64, n))
}
