//! Tests of the suite's selection parsing and helpers.

use super::ood::marginal_nll;
use super::quality::spread_rows;
use super::*;
use crate::data::{Dataset, Storage};
use crate::metrics::likelihood::PerExampleNll;
use crate::model::{LikelihoodKind, LikelihoodSpace};

#[test]
fn metric_lists_parse_with_clear_errors() -> Result<()> {
    let s = MetricSelection::parse("fid, kid,fid,mmd")?;
    assert!(!s.nll);
    assert_eq!(
        s.quality,
        vec![QualityMetric::Fid, QualityMetric::Kid, QualityMetric::Mmd]
    );
    let all = MetricSelection::parse("all")?;
    assert!(all.nll && !all.ais);
    let ais = MetricSelection::parse("ais,nll")?;
    assert!(ais.ais && ais.nll && ais.quality.is_empty());
    assert_eq!(all.quality.len(), 5);
    let e = MetricSelection::parse("nll,fdi").unwrap_err().to_string();
    assert!(
        e.contains("fdi") && e.contains("kid") && e.contains("all"),
        "{e}"
    );
    assert!(MetricSelection::parse(" , ").is_err());
    Ok(())
}

#[test]
fn spread_rows_keeps_whole_rows_evenly() {
    let x: Vec<f32> = (0..20).map(|v| v as f32).collect(); // 10 rows of 2
    assert_eq!(
        spread_rows(&x, 2, 5),
        vec![0., 1., 4., 5., 8., 9., 12., 13., 16., 17.]
    );
    assert_eq!(spread_rows(&x, 2, 50), x);
}

/// The classes asked of 10 000 samples of a 10-class model: 1000 of each, and neither the MMD test's evenly
/// spread subset of 1000 nor any of the ten contiguous splits of the Inception Score is far from 100 / 1000 of
/// each (cycling labels would put the whole spread subset in class 0; runs would give each split one class).
#[test]
fn sample_classes_are_balanced_in_every_structured_subset() {
    let (n, k) = (10_000, 10);
    let labels = super::quality::sample_classes(n, k, 0);
    let counts = |set: &[u32]| {
        let mut c = vec![0usize; k];
        set.iter().for_each(|&l| c[l as usize] += 1);
        c
    };
    assert_eq!(counts(&labels), vec![1000; k]);
    let as_f32: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let spread: Vec<u32> = spread_rows(&as_f32, 1, 1000)
        .iter()
        .map(|&l| l as u32)
        .collect();
    // a hypergeometric count of 100 has sd ≈ 9: ± 40 is over four sd
    assert!(
        counts(&spread).iter().all(|&c| c.abs_diff(100) < 40),
        "{:?}",
        counts(&spread)
    );
    for split in labels.chunks(1000) {
        assert!(
            counts(split).iter().all(|&c| c.abs_diff(100) < 40),
            "{:?}",
            counts(split)
        );
    }
    assert_eq!(super::quality::sample_classes(n, k, 0), labels);
    assert_ne!(super::quality::sample_classes(n, k, 1), labels);
}

/// −log p(x) = −log ½ (p(x|0) + p(x|1)): with NLLs 1 and 3 nats, −log ½ (e⁻¹ + e⁻³) = 1.566 … by hand.
#[test]
fn marginal_nll_averages_the_class_likelihoods() -> Result<()> {
    let ds = Dataset {
        name: "t".into(),
        example_shape: vec![1],
        storage: Storage::F32(vec![0.0, 0.0, 0.0]),
        labels: None,
        num_classes: None,
        class_names: None,
        captions: None,
    };
    let nll = |d: &Dataset| -> Result<PerExampleNll> {
        let y = d.labels.as_ref().map_or(9, |l| l[0]);
        assert_eq!(d.len(), 2, "only the first n examples are scored");
        Ok(PerExampleNll {
            nats: vec![if y == 0 { 1.0 } else { 3.0 }, 5.0],
            kind: LikelihoodKind::LowerBound("ELBO".into()),
            space: LikelihoodSpace::Discrete,
        })
    };
    let r = marginal_nll(&ds, 2, 2, &nll)?;
    let want0 = -(0.5 * ((-1.0f64).exp() + (-3.0f64).exp())).ln();
    assert!(
        (r.nats[0] - want0).abs() < 1e-12,
        "{} vs {want0}",
        r.nats[0]
    );
    assert!((want0 - 1.566).abs() < 1e-3);
    assert!((r.nats[1] - 5.0).abs() < 1e-12); // equal per-class NLLs: the marginal is the same
    assert_eq!(r.kind, LikelihoodKind::LowerBound("ELBO".into()));
    Ok(())
}
