//! The implicit family: generators trained without a likelihood, by playing a two-sample test against the
//! data.
//!
//! * [`dcgan`]: DCGAN (non-saturating loss), SN-GAN (spectrally normalised critic, hinge loss) and the
//!   class-conditional GAN with a projection discriminator. These implement [`crate::model::Adversarial`]:
//!   two players, two parameter groups, two optimisers (`[train.groups.generator]`,
//!   `[train.groups.discriminator]`), driven by the trainer's GAN step.
//! * [`gmmn`]: a generator trained by minimising the kernel two-sample statistic MMD² (one loss).
//! * [`nets`]: the generator and discriminator networks they share.
//!
//! None of them has a likelihood (no [`crate::model::Density`]): `dgm eval --metric nll` refuses them; an
//! annealed-importance-sampling estimate for a decoder with a Gaussian observation model is in
//! [`crate::metrics::ais`].

pub mod dcgan;
pub mod gmmn;
pub mod nets;
