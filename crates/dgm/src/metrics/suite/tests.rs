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
    assert!(all.nll);
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
