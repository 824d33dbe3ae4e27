//! Model families, and the registry that builds a model by name.
//!
//! A model's config is a typed serde struct in its own file; the registry moves it through TOML so that
//! `config.toml`, `--config FILE` and `--set model.key=value` all work the same way for every family.
//! [`REGISTRY`] is the one place that knows which models exist: the library's lookups below, the CLI's help,
//! `train`'s default data and the refusals of model / data pairs all read it.

pub mod autoregressive;
pub mod diffusion;
pub mod ebm;
pub mod flows;
pub mod gan;
pub mod vae;

use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data::{DataKind, DataSpec, Preprocessing};
use crate::model::Model;
use crate::{Error, Result};

/// What a model needs to know about its data to be built.
#[derive(Clone, Debug, PartialEq)]
pub struct DataInfo {
    /// Shape of one example: `[c, h, w]` or `[d]`.
    pub example_shape: Vec<usize>,
    /// Number of classes, if the data set has labels.
    pub num_classes: Option<usize>,
    /// How the data are preprocessed.
    pub preprocessing: Preprocessing,
    /// The tokenizer of text data (the examples are then token windows), `None` otherwise.
    pub tokenizer: Option<crate::data::Tokenizer>,
    /// The sorted distinct words of the data set's captions, when it has captions (the vocabulary of a
    /// caption-conditional model).
    pub caption_words: Option<Vec<String>>,
}

#[cfg(test)]
impl DataInfo {
    /// Data of `shape` with `classes`, preprocessed by `preprocessing`, no text (for the models' tests).
    pub(crate) fn of(
        shape: &[usize],
        classes: Option<usize>,
        preprocessing: Preprocessing,
    ) -> Self {
        Self {
            example_shape: shape.to_vec(),
            num_classes: classes,
            preprocessing,
            tokenizer: None,
            caption_words: None,
        }
    }
}

/// What a model offers besides training and sampling, as static flags for help texts and refusals. The
/// runtime views ([`Model::as_density`], [`Model::as_latent`], …) stay the authority on a built model; a unit
/// test checks that every row's flags agree with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Abilities {
    /// A likelihood (exact, a bound or an estimate): [`Model::as_density`], `dgm eval --metric nll`.
    pub density: bool,
    /// Encode / decode to latent codes: [`Model::as_latent`], `dgm encode`, `dgm interpolate`.
    pub latent: bool,
    /// Generates and scores token sequences (a language model): [`Model::as_sequence`], `dgm score`.
    pub sequence: bool,
    /// Samples the rest of a partly known image: [`Model::as_complete`], `dgm edit complete`.
    pub complete: bool,
    /// A diffusion denoiser: [`Model::as_denoiser`], classifier-free guidance, `dgm edit inpaint`,
    /// `super-resolve`, `colorize`, `deblur`, `reconstruct` and `sdedit`.
    pub denoiser: bool,
    /// Can be conditioned on class labels (`--class`), always or when its config asks for it.
    pub class_conditional: bool,
    /// Trained as a two-player game with two optimisers (GANs): [`Model::as_adversarial`].
    pub adversarial: bool,
    /// An example is a function of z ~ N(0, I) (GAN generators, VAE decoders; a VAE's AIS needs its Gaussian
    /// decoder): [`Model::as_decoder_based`], `dgm eval --metric ais`.
    pub decoder_based: bool,
    /// An energy-based model sampled by Langevin dynamics: [`Model::as_energy_based`], `dgm eval --metric ais`
    /// (log Z).
    pub energy_based: bool,
}

impl Abilities {
    /// No abilities (the base that rows extend with `..Abilities::NONE`).
    pub const NONE: Abilities = Abilities {
        density: false,
        latent: false,
        sequence: false,
        complete: false,
        denoiser: false,
        class_conditional: false,
        adversarial: false,
        decoder_based: false,
        energy_based: false,
    };
}

/// One model of the [`REGISTRY`]: its name, what it trains on, its config and how to build it.
///
/// The config functions take and give the model's config as a TOML table (the typed config lives in the
/// model's file; [`from_table`] / [`to_table`] / [`with_config`] convert).
#[derive(Clone, Copy)]
pub struct ModelEntry {
    /// The registry name (`dgm train NAME`, `[model] name` in `config.toml`, [`Model::name`]).
    pub name: &'static str,
    /// The family: the module under `models/` it lives in (`vae`, `diffusion`, `autoregressive`).
    pub family: &'static str,
    /// A one-line description.
    pub about: &'static str,
    /// The kinds of data it trains on (see [`check_data`]); never empty.
    pub data_kinds: &'static [DataKind],
    /// The data set `dgm train NAME` uses when no `--data` is given.
    pub default_data: &'static str,
    /// What it offers besides training and sampling.
    pub abilities: Abilities,
    /// Its default config.
    pub defaults: fn() -> Result<toml::Table>,
    /// Reads a config table as its typed config and writes it back: unknown keys are refused, missing ones
    /// take the type's defaults (the defaults round-trip unchanged).
    pub normalize: fn(&toml::Table) -> Result<toml::Table>,
    /// The preprocessing it trains on by default for a data set.
    pub preprocessing: fn(&DataSpec) -> Preprocessing,
    /// Fills the data-dependent fields of its config (see [`prepare`]).
    pub prepare: fn(&mut toml::Table, &DataInfo) -> Result<()>,
    /// Its memory [`Footprint`] with a prepared config.
    pub footprint: fn(&toml::Table) -> Result<Footprint>,
    /// The shape of one example with a prepared config (possibly empty when unprepared; see [`example_shape`]).
    pub example_shape: fn(&toml::Table) -> Result<Vec<usize>>,
    /// Refuses training settings it cannot run with (prepared config, batch size; see [`check_train`]).
    pub check_train: fn(&toml::Table, usize) -> Result<()>,
    /// Builds it (registry name, prepared config, variables); no memory check (see [`build`]).
    pub build: fn(&str, &toml::Table, VarBuilder) -> Result<Box<dyn Model>>,
}

impl std::fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEntry")
            .field("name", &self.name)
            .field("family", &self.family)
            .field("data_kinds", &self.data_kinds)
            .field("default_data", &self.default_data)
            .field("abilities", &self.abilities)
            .finish_non_exhaustive()
    }
}

/// Images or 2-D points.
const IMAGES_OR_POINTS: &[DataKind] = &[DataKind::Images, DataKind::Points];

/// The preprocessing of diffusion models (DDPM, EDM, NCSN): 8-bit images scaled to [−1, 1] (Ho et al. 2020,
/// section 3.3; no dequantization, so the discretized decoder at t = 0 gives a likelihood of the 256 levels;
/// EDM's σ_data = 0.5 and NCSN's σ levels assume this range too); other data as the data set has them.
fn minus_one_to_one(spec: &DataSpec) -> Preprocessing {
    match spec.default_preprocessing() {
        Preprocessing::Binarize { .. } | Preprocessing::Scale { .. } => Preprocessing::Scale {
            range: crate::data::Range::MinusOneOne,
            dequantize: false,
        },
        p => p,
    }
}

/// The footprint of a diffusion model: its network's activations, no buffers.
fn net_footprint(net: &diffusion::net::NetConfig) -> Footprint {
    Footprint {
        buffers: 0,
        activations_per_example: net.activations_per_example(),
    }
}

/// Every model dgm knows, in the order help texts and error messages list them.
///
/// Adding a model:
/// 1. write its file under `models/<family>/` (a new family is a new module declared above): a typed config
///    (`Serialize + Deserialize + Default`, `#[serde(deny_unknown_fields, default)]`), its `prepare` (fill the
///    data-dependent fields from a [`DataInfo`], refuse what cannot work), its `footprint` (documented count of
///    the values a training step keeps alive), and the model implementing [`Model`] (and [`Model::as_density`]
///    etc. for the abilities it has);
/// 2. add one row below: name, family, one-line `about`, the data kinds it trains on, its default data set,
///    its [`Abilities`] (a unit test checks them against the built model), and the functions that reach its
///    config (use [`with_config`] / [`from_table`] / [`to_table`]).
///
/// Nothing else: the CLI's help, `dgm train`'s default data, the model / data refusals, the memory checks and
/// the unit tests (defaults round-trip, names unique, abilities) all read this table.
pub const REGISTRY: &[ModelEntry] = &[
    ModelEntry {
        name: "vae",
        family: "vae",
        about: "variational autoencoder (Kingma & Welling 2014)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            latent: true,
            decoder_based: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&vae::preset("vae")?),
        normalize: |t| to_table(&from_table::<vae::VaeConfig>(t)?),
        preprocessing: DataSpec::default_preprocessing,
        prepare: |t, d| with_config(t, |c| vae::prepare(c, d)),
        footprint: |t| Ok(vae::config::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<vae::VaeConfig>(t)?.input_shape),
        check_train: any_batch,
        build: |name, t, vb| Ok(Box::new(vae::Vae::new(name, from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "iwae",
        family: "vae",
        about: "importance-weighted autoencoder (Burda, Grosse & Salakhutdinov 2016)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            latent: true,
            decoder_based: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&vae::preset("iwae")?),
        normalize: |t| to_table(&from_table::<vae::VaeConfig>(t)?),
        preprocessing: DataSpec::default_preprocessing,
        prepare: |t, d| with_config(t, |c| vae::prepare(c, d)),
        footprint: |t| Ok(vae::config::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<vae::VaeConfig>(t)?.input_shape),
        check_train: any_batch,
        build: |name, t, vb| Ok(Box::new(vae::Vae::new(name, from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "cvae",
        family: "vae",
        about: "class-conditional variational autoencoder (Sohn, Lee & Yan 2015)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            latent: true,
            class_conditional: true,
            decoder_based: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&vae::preset("cvae")?),
        normalize: |t| to_table(&from_table::<vae::VaeConfig>(t)?),
        preprocessing: DataSpec::default_preprocessing,
        prepare: |t, d| with_config(t, |c| vae::prepare(c, d)),
        footprint: |t| Ok(vae::config::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<vae::VaeConfig>(t)?.input_shape),
        check_train: any_batch,
        build: |name, t, vb| Ok(Box::new(vae::Vae::new(name, from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "ddpm",
        family: "diffusion",
        about: "denoising diffusion probabilistic model (Ho, Jain & Abbeel 2020)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            latent: true,
            denoiser: true,
            class_conditional: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&diffusion::DdpmConfig::default()),
        normalize: |t| to_table(&from_table::<diffusion::DdpmConfig>(t)?),
        preprocessing: minus_one_to_one,
        prepare: |t, d| with_config(t, |c| diffusion::ddpm::prepare(c, d)),
        footprint: |t| Ok(net_footprint(&from_table::<diffusion::DdpmConfig>(t)?.net)),
        example_shape: |t| Ok(from_table::<diffusion::DdpmConfig>(t)?.net.input_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(diffusion::Ddpm::new(from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "edm",
        family: "diffusion",
        about: "diffusion with the preconditioning and samplers of Karras et al. 2022 (EDM)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            denoiser: true,
            class_conditional: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&diffusion::EdmConfig::default()),
        normalize: |t| to_table(&from_table::<diffusion::EdmConfig>(t)?),
        preprocessing: minus_one_to_one,
        prepare: |t, d| with_config(t, |c| diffusion::edm::prepare(c, d)),
        footprint: |t| Ok(net_footprint(&from_table::<diffusion::EdmConfig>(t)?.net)),
        example_shape: |t| Ok(from_table::<diffusion::EdmConfig>(t)?.net.input_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(diffusion::Edm::new(from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "ncsn",
        family: "diffusion",
        about: "noise-conditional score network with annealed Langevin sampling (Song & Ermon 2019, 2020)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            denoiser: true,
            class_conditional: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&diffusion::NcsnConfig::default()),
        normalize: |t| to_table(&from_table::<diffusion::NcsnConfig>(t)?),
        preprocessing: minus_one_to_one,
        prepare: |t, d| with_config(t, |c| diffusion::ncsn::prepare(c, d)),
        footprint: |t| Ok(net_footprint(&from_table::<diffusion::NcsnConfig>(t)?.net)),
        example_shape: |t| Ok(from_table::<diffusion::NcsnConfig>(t)?.net.input_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(diffusion::Ncsn::new(from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "made",
        family: "autoregressive",
        about: "masked autoencoder for distribution estimation (Germain et al. 2015)",
        data_kinds: &[DataKind::Images],
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            complete: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&autoregressive::made::MadeConfig::default()),
        normalize: |t| to_table(&from_table::<autoregressive::made::MadeConfig>(t)?),
        preprocessing: DataSpec::default_preprocessing,
        prepare: |t, d| with_config(t, |c| autoregressive::made::prepare(c, d)),
        footprint: |t| Ok(autoregressive::made::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<autoregressive::made::MadeConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(autoregressive::made::Made::new(from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "pixelcnn",
        family: "autoregressive",
        about: "gated PixelCNN image model (van den Oord et al. 2016; PixelCNN++ outputs)",
        data_kinds: &[DataKind::Images],
        default_data: "shapes",
        abilities: Abilities {
            density: true,
            complete: true,
            class_conditional: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&autoregressive::pixelcnn::PixelCnnConfig::default()),
        normalize: |t| to_table(&from_table::<autoregressive::pixelcnn::PixelCnnConfig>(t)?),
        preprocessing: DataSpec::default_preprocessing,
        prepare: |t, d| with_config(t, |c| autoregressive::pixelcnn::prepare(c, d)),
        footprint: |t| Ok(autoregressive::pixelcnn::footprint(&from_table(t)?)),
        example_shape: |t| {
            Ok(from_table::<autoregressive::pixelcnn::PixelCnnConfig>(t)?.example_shape)
        },
        check_train: any_batch,
        build: |_, t, vb| {
            Ok(Box::new(autoregressive::pixelcnn::PixelCnn::new(
                from_table(t)?,
                vb,
            )?))
        },
    },
    ModelEntry {
        name: "wavenet",
        family: "autoregressive",
        about: "WaveNet audio model over 8-bit μ-law codes, dilated causal convolutions (van den Oord et al. 2016)",
        data_kinds: &[DataKind::Audio],
        default_data: "spoken-digits",
        abilities: Abilities {
            density: true,
            class_conditional: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&autoregressive::wavenet::WaveNetConfig::default()),
        normalize: |t| to_table(&from_table::<autoregressive::wavenet::WaveNetConfig>(t)?),
        preprocessing: DataSpec::default_preprocessing,
        prepare: |t, d| with_config(t, |c| autoregressive::wavenet::prepare(c, d)),
        footprint: |t| Ok(autoregressive::wavenet::footprint(&from_table(t)?)),
        example_shape: |t| Ok(vec![from_table::<autoregressive::wavenet::WaveNetConfig>(t)?.length]),
        check_train: any_batch,
        build: |_, t, vb| {
            Ok(Box::new(autoregressive::wavenet::WaveNet::new(
                from_table(t)?,
                vb,
            )?))
        },
    },
    ModelEntry {
        name: "gpt",
        family: "autoregressive",
        about: "decoder-only transformer language model over characters or bytes (nanoGPT layout)",
        data_kinds: &[DataKind::Text],
        default_data: "text:tinyshakespeare",
        abilities: Abilities {
            density: true,
            sequence: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&autoregressive::gpt::GptConfig::default()),
        normalize: |t| to_table(&from_table::<autoregressive::gpt::GptConfig>(t)?),
        preprocessing: DataSpec::default_preprocessing,
        prepare: |t, d| with_config(t, |c| autoregressive::gpt::prepare(c, d)),
        footprint: |t| Ok(autoregressive::gpt::footprint(&from_table(t)?)),
        example_shape: |t| Ok(vec![from_table::<autoregressive::gpt::GptConfig>(t)?.block_size]),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(autoregressive::gpt::Gpt::new(from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "realnvp",
        family: "flows",
        about: "RealNVP normalizing flow, affine couplings, multi-scale (Dinh et al. 2017)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "toy2d:moons",
        abilities: FLOW,
        defaults: || to_table(&flows::realnvp::RealNvpConfig::default()),
        normalize: |t| to_table(&from_table::<flows::realnvp::RealNvpConfig>(t)?),
        preprocessing: dequantized,
        prepare: |t, d| with_config(t, |c| flows::realnvp::prepare(c, d)),
        footprint: |t| Ok(flows::realnvp::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<flows::realnvp::RealNvpConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(flows::realnvp::new(&from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "glow",
        family: "flows",
        about: "Glow normalizing flow: ActNorm, invertible 1×1 convolutions, couplings (Kingma & Dhariwal 2018)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "toy2d:moons",
        abilities: FLOW,
        defaults: || to_table(&flows::glow::GlowConfig::default()),
        normalize: |t| to_table(&from_table::<flows::glow::GlowConfig>(t)?),
        preprocessing: dequantized,
        prepare: |t, d| with_config(t, |c| flows::glow::prepare(c, d)),
        footprint: |t| Ok(flows::glow::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<flows::glow::GlowConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(flows::glow::new(&from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "maf",
        family: "flows",
        about: "masked autoregressive flow: MADE affine layers, order reversed between them (Papamakarios et al. 2017)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "toy2d:moons",
        abilities: FLOW,
        defaults: || to_table(&flows::maf::MafConfig::default()),
        normalize: |t| to_table(&from_table::<flows::maf::MafConfig>(t)?),
        preprocessing: dequantized,
        prepare: |t, d| with_config(t, |c| flows::maf::prepare(c, d)),
        footprint: |t| Ok(flows::maf::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<flows::maf::MafConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(flows::maf::new(&from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "nsf",
        family: "flows",
        about: "neural spline flow: rational-quadratic spline couplings or autoregressive layers (Durkan et al. 2019)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "toy2d:moons",
        abilities: FLOW,
        defaults: || to_table(&flows::nsf::NsfConfig::default()),
        normalize: |t| to_table(&from_table::<flows::nsf::NsfConfig>(t)?),
        preprocessing: dequantized,
        prepare: |t, d| with_config(t, |c| flows::nsf::prepare(c, d)),
        footprint: |t| Ok(flows::nsf::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<flows::nsf::NsfConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(flows::nsf::new(&from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "dcgan",
        family: "gan",
        about: "DCGAN, non-saturating loss (Radford, Metz & Chintala 2016)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            adversarial: true,
            decoder_based: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&gan::dcgan::preset("dcgan")?),
        normalize: |t| to_table(&from_table::<gan::dcgan::GanConfig>(t)?),
        preprocessing: minus_one_to_one,
        prepare: |t, d| with_config(t, |c| gan::dcgan::prepare(c, d)),
        footprint: |t| Ok(gan::dcgan::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<gan::dcgan::GanConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |name, t, vb| Ok(Box::new(gan::dcgan::Gan::new(name, from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "sngan",
        family: "gan",
        about: "GAN with a spectrally normalised critic and the hinge loss (Miyato et al. 2018)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            adversarial: true,
            decoder_based: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&gan::dcgan::preset("sngan")?),
        normalize: |t| to_table(&from_table::<gan::dcgan::GanConfig>(t)?),
        preprocessing: minus_one_to_one,
        prepare: |t, d| with_config(t, |c| gan::dcgan::prepare(c, d)),
        footprint: |t| Ok(gan::dcgan::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<gan::dcgan::GanConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |name, t, vb| Ok(Box::new(gan::dcgan::Gan::new(name, from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "cgan",
        family: "gan",
        about: "class-conditional GAN, projection discriminator (Miyato & Koyama 2018)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "shapes",
        abilities: Abilities {
            class_conditional: true,
            adversarial: true,
            decoder_based: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&gan::dcgan::preset("cgan")?),
        normalize: |t| to_table(&from_table::<gan::dcgan::GanConfig>(t)?),
        preprocessing: minus_one_to_one,
        prepare: |t, d| with_config(t, |c| gan::dcgan::prepare(c, d)),
        footprint: |t| Ok(gan::dcgan::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<gan::dcgan::GanConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |name, t, vb| Ok(Box::new(gan::dcgan::Gan::new(name, from_table(t)?, vb)?)),
    },
    ModelEntry {
        name: "mmd-gen",
        family: "gan",
        about: "generator trained by the MMD two-sample statistic (Li, Swersky & Zemel 2015)",
        data_kinds: IMAGES_OR_POINTS,
        default_data: "toy2d:8gaussians",
        abilities: Abilities {
            decoder_based: true,
            ..Abilities::NONE
        },
        defaults: || to_table(&gan::gmmn::MmdGenConfig::default()),
        normalize: |t| to_table(&from_table::<gan::gmmn::MmdGenConfig>(t)?),
        preprocessing: minus_one_to_one,
        prepare: |t, d| with_config(t, |c| gan::gmmn::prepare(c, d)),
        footprint: |t| Ok(gan::gmmn::footprint(&from_table(t)?)),
        example_shape: |t| Ok(from_table::<gan::gmmn::MmdGenConfig>(t)?.example_shape),
        check_train: any_batch,
        build: |_, t, vb| Ok(Box::new(gan::gmmn::MmdGenerator::new(from_table(t)?, vb)?)),
    },
    EBM,
    ModelEntry {
        name: "jem",
        about: "joint energy-based model: a classifier whose logits are an energy (Grathwohl et al. 2019)",
        data_kinds: &[DataKind::Images],
        default_data: "mnist",
        abilities: Abilities {
            class_conditional: true,
            ..ENERGY
        },
        defaults: || to_table(&ebm::ebm::preset("jem")?),
        ..EBM
    },
];

/// The energy-based model trained by CD or NCE; `jem` is the same row with its own preset.
const EBM: ModelEntry = ModelEntry {
    name: "ebm",
    family: "ebm",
    about: "energy-based model trained by contrastive divergence with Langevin chains (Du & Mordatch 2019) or by NCE",
    data_kinds: IMAGES_OR_POINTS,
    default_data: "toy2d:8gaussians",
    abilities: ENERGY,
    defaults: || to_table(&ebm::ebm::preset("ebm")?),
    normalize: |t| to_table(&from_table::<ebm::ebm::EbmConfig>(t)?),
    preprocessing: dequantized_minus_one_one,
    prepare: |t, d| with_config(t, |c| ebm::ebm::prepare(c, d)),
    footprint: |t| Ok(ebm::ebm::footprint(&from_table(t)?)),
    example_shape: |t| Ok(from_table::<ebm::ebm::EbmConfig>(t)?.example_shape),
    check_train: |t, batch| ebm::ebm::check_train(&from_table(t)?, batch),
    build: |name, t, vb| Ok(Box::new(ebm::ebm::Ebm::new(name, from_table(t)?, vb)?)),
};

/// What an energy-based model offers: a likelihood estimate (AIS for log Z) and Langevin sampling.
const ENERGY: Abilities = Abilities {
    density: true,
    energy_based: true,
    ..Abilities::NONE
};

/// The preprocessing of energy-based models: images as uniformly dequantized pixels in [−1, 1] (a density
/// over a box of continuous values; the Langevin settings assume this range), points as they are.
fn dequantized_minus_one_one(spec: &DataSpec) -> Preprocessing {
    match spec.default_preprocessing() {
        Preprocessing::Binarize { .. } | Preprocessing::Scale { .. } => Preprocessing::Scale {
            range: crate::data::Range::MinusOneOne,
            dequantize: true,
        },
        p => p,
    }
}

/// What a normalizing flow offers: an exact density and an exact encoder / decoder.
const FLOW: Abilities = Abilities {
    density: true,
    latent: true,
    ..Abilities::NONE
};

/// The preprocessing of the flows: images as uniformly dequantized pixels in [0, 1] (a continuous density
/// needs continuous data; the logit or shift into the flow's space is the model's first layer, its Jacobian
/// counted), points as they are.
fn dequantized(spec: &DataSpec) -> Preprocessing {
    match spec.default_preprocessing() {
        Preprocessing::Binarize { .. } | Preprocessing::Scale { .. } => Preprocessing::Scale {
            range: crate::data::Range::ZeroOne,
            dequantize: true,
        },
        p => p,
    }
}

/// The registry names, in [`REGISTRY`] order (for help texts and error messages).
pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The registry row of model `name`; an unknown name is refused with the valid ones listed.
pub fn entry(name: &str) -> Result<&'static ModelEntry> {
    REGISTRY
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::unknown("model", name, &model_names()))
}

/// The names of the models whose [`Abilities`] pass `has`, in [`REGISTRY`] order (e.g. the models a
/// refusal points to).
pub fn names_with(has: impl Fn(&Abilities) -> bool) -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|e| has(&e.abilities))
        .map(|e| e.name)
        .collect()
}

/// The names of the models that train on data of `kind`.
pub fn names_with_data(kind: DataKind) -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|e| e.data_kinds.contains(&kind))
        .map(|e| e.name)
        .collect()
}

/// The kinds of data model `name` trains on: images (mnist, shapes), 2-D points (toy2d), text or audio.
pub fn data_kinds(name: &str) -> Result<&'static [DataKind]> {
    Ok(entry(name)?.data_kinds)
}

/// Refuses a model / data pair that cannot train (e.g. `vae` on text, `gpt` on images), in one line naming
/// the kinds of data the model takes and the models that take this data.
pub fn check_data(name: &str, spec: &DataSpec) -> Result<()> {
    let kinds = data_kinds(name)?;
    let kind = spec.kind();
    if kinds.contains(&kind) {
        return Ok(());
    }
    let takes: Vec<String> = kinds.iter().map(|k| k.describe()).collect();
    let others: Vec<&str> = REGISTRY
        .iter()
        .filter(|e| e.data_kinds.contains(&kind))
        .map(|e| e.name)
        .collect();
    Err(Error::invalid(
        "data",
        format!(
            "model '{name}' trains on {}, not {} like '{}'; {} data go with: {}",
            takes.join(" or "),
            kind.name(),
            spec.name(),
            kind.name(),
            others.join(", ")
        ),
    ))
}

/// What a model needs in memory besides one copy of its parameters, in f32 values: the estimate behind
/// [`crate::memory`]'s refusals. Each family documents its count at its `footprint` function; it is an
/// estimate of the values a training step keeps alive (forward values saved for the backward pass, and their
/// gradients), within a small factor, not an exact account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Values the model keeps besides its parameters (MADE's masks); 0 for most models.
    pub buffers: u64,
    /// Values one training example keeps alive during a step (a batch of b keeps b times as many).
    pub activations_per_example: u64,
}

/// The parameter groups model `name` trains, each with its own optimiser: `generator` and `discriminator`
/// for an adversarial model, one group `all` otherwise.
pub fn parameter_groups(name: &str) -> Result<&'static [&'static str]> {
    use crate::model::{DISCRIMINATOR, GENERATOR};
    Ok(if entry(name)?.abilities.adversarial {
        &[GENERATOR, DISCRIMINATOR]
    } else {
        &["all"]
    })
}

/// Refuses training settings model `name` cannot run with, before anything is written (its row's
/// `check_train`; e.g. an energy-based model's replay buffer must hold at least one batch of `batch_size`).
pub fn check_train(name: &str, cfg: &toml::Table, batch_size: usize) -> Result<()> {
    (entry(name)?.check_train)(cfg, batch_size)
}

/// A row's `check_train` for models that train with any batch size.
fn any_batch(_: &toml::Table, _: usize) -> Result<()> {
    Ok(())
}

/// The [`Footprint`] of model `name` with its (prepared) config `cfg`.
pub fn footprint(name: &str, cfg: &toml::Table) -> Result<Footprint> {
    (entry(name)?.footprint)(cfg)
}

/// The shape of one example of model `name` with its prepared config (`[c, h, w]` images, `[d]` vectors,
/// `[T]` token windows): the shape its samples have.
pub fn example_shape(name: &str, cfg: &toml::Table) -> Result<Vec<usize>> {
    let shape = (entry(name)?.example_shape)(cfg)?;
    if shape.is_empty() {
        return Err(Error::invalid(
            "model",
            format!(
                "the config of model '{name}' has no example shape (it was not prepared with data)"
            ),
        ));
    }
    Ok(shape)
}

/// `a · b`, saturating (sizes come from user configs and may be absurd).
pub(crate) fn sat_mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// The saturating sum of `v`.
pub(crate) fn sat_sum(v: impl IntoIterator<Item = u64>) -> u64 {
    v.into_iter().fold(0u64, |a, b| a.saturating_add(b))
}

/// The saturating product of a shape's sizes.
pub(crate) fn sat_prod(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |a, &b| a.saturating_mul(b as u64))
}

/// Serialises a typed config to a TOML table.
pub fn to_table<T: Serialize>(cfg: &T) -> Result<toml::Table> {
    toml::Table::try_from(cfg)
        .map_err(|e| Error::invalid("model", format!("cannot serialise config: {e}")))
}

/// Deserialises a typed config from a TOML table; unknown keys are rejected with the valid ones listed.
pub fn from_table<T: DeserializeOwned + Serialize + Default>(t: &toml::Table) -> Result<T> {
    let valid = to_table(&T::default())?;
    if let Some(k) = t.keys().find(|k| !valid.contains_key(*k)) {
        let opts: Vec<&str> = valid.keys().map(|s| s.as_str()).collect();
        return Err(Error::unknown("model config key", k.clone(), &opts));
    }
    T::deserialize(toml::Value::Table(t.clone()))
        .map_err(|e| Error::invalid("model", e.to_string()))
}

/// Reads the typed config in `t`, changes it with `f` and writes it back (a row's `prepare`).
pub fn with_config<T: DeserializeOwned + Serialize + Default>(
    t: &mut toml::Table,
    f: impl FnOnce(&mut T) -> Result<()>,
) -> Result<()> {
    let mut c: T = from_table(t)?;
    f(&mut c)?;
    *t = to_table(&c)?;
    Ok(())
}

/// The default config of model `name`, as a TOML table.
pub fn default_config(name: &str) -> Result<toml::Table> {
    (entry(name)?.defaults)()
}

/// The preprocessing model `name` trains on by default for data set `spec` (its row's `preprocessing`):
/// diffusion models (DDPM, EDM, NCSN) and GANs see 8-bit images scaled to [−1, 1], every other model takes the
/// data set's default (as does an unknown name).
pub fn default_preprocessing(name: &str, spec: &DataSpec) -> Preprocessing {
    match entry(name) {
        Ok(e) => (e.preprocessing)(spec),
        Err(_) => spec.default_preprocessing(),
    }
}

/// Fills the data-dependent fields of a model config (input shape, number of classes) and resolves automatic
/// choices (e.g. the VAE decoder from the preprocessing); rejects combinations that cannot work.
pub fn prepare(name: &str, cfg: &mut toml::Table, data: &DataInfo) -> Result<()> {
    (entry(name)?.prepare)(cfg, data)
}

/// Builds model `name` from its (prepared) config, creating or loading variables through `vb`. A model whose
/// parameters (or buffers) alone do not fit in the available memory is refused first, in one line, before
/// anything is allocated ([`crate::memory::check_model`]).
pub fn build(name: &str, cfg: &toml::Table, vb: VarBuilder) -> Result<Box<dyn Model>> {
    entry(name)?;
    crate::memory::check_model(name, cfg, &crate::memory::available()?)?;
    build_unchecked(name, cfg, vb)
}

/// [`build`] without the memory check (the shape-only count of [`crate::memory`] builds through this).
pub(crate) fn build_unchecked(
    name: &str,
    cfg: &toml::Table,
    vb: VarBuilder,
) -> Result<Box<dyn Model>> {
    (entry(name)?.build)(name, cfg, vb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Tokenizer;
    use crate::nn::Params;
    use candle_core::Device;

    /// Names are unique, every row takes some data and its default data set is one it trains on.
    #[test]
    fn registry_rows_are_consistent() -> Result<()> {
        let names = model_names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate names in {names:?}");
        for e in REGISTRY {
            assert!(!e.data_kinds.is_empty(), "{} takes no data", e.name);
            assert!(!e.about.is_empty() && !e.about.contains('\n'), "{}", e.name);
            assert!(!e.family.is_empty(), "{}", e.name);
            check_data(e.name, &DataSpec::parse(e.default_data)?)?;
            assert_eq!(entry(e.name)?.name, e.name);
        }
        let err = entry("vea").unwrap_err().to_string();
        assert!(
            err.contains("vea") && err.contains(&names.join(", ")),
            "{err}"
        );
        Ok(())
    }

    /// Every row's defaults round-trip through its typed config unchanged (defaults → from_table → to_table),
    /// and an unknown key is refused.
    #[test]
    fn defaults_round_trip() -> Result<()> {
        for e in REGISTRY {
            let d = (e.defaults)()?;
            assert!(!d.is_empty(), "{}", e.name);
            assert_eq!((e.normalize)(&d)?, d, "{}", e.name);
            assert_eq!(default_config(e.name)?, d);
            let mut bad = d.clone();
            bad.insert("no_such_key".into(), toml::Value::Integer(1));
            let err = (e.normalize)(&bad).unwrap_err().to_string();
            assert!(err.contains("no_such_key"), "{}: {err}", e.name);
        }
        Ok(())
    }

    /// A small example of each kind of data a model takes: the data set, the shape of one example, the
    /// tokenizer.
    fn small_data(kind: DataKind) -> (&'static str, Vec<usize>, Option<Tokenizer>) {
        match kind {
            DataKind::Points => ("toy2d:moons", vec![2], None),
            DataKind::Images => ("mnist", vec![1, 28, 28], None),
            DataKind::Text => ("text:x", vec![16], Some(Tokenizer::Bytes)),
            DataKind::Audio => ("spoken-digits", vec![64], None),
        }
    }

    /// Each row prepares, builds and reports an example shape on the last kind of data it takes, and its
    /// static abilities are those the built model offers.
    #[test]
    fn abilities_match_the_built_models() -> Result<()> {
        for e in REGISTRY {
            let kind = *e.data_kinds.last().expect("a row takes some data");
            let (data, shape, tokenizer) = small_data(kind);
            let spec = DataSpec::parse(data)?;
            let mut cfg = default_config(e.name)?;
            prepare(
                e.name,
                &mut cfg,
                &DataInfo {
                    example_shape: shape.clone(),
                    num_classes: Some(10),
                    preprocessing: default_preprocessing(e.name, &spec),
                    tokenizer,
                    caption_words: None,
                },
            )?;
            assert_eq!((e.normalize)(&cfg)?, cfg, "{}", e.name);
            let got = example_shape(e.name, &cfg)?;
            assert!(!got.is_empty(), "{}", e.name);
            assert!(
                footprint(e.name, &cfg)?.activations_per_example > 0,
                "{}",
                e.name
            );
            let p = Params::new(0, &Device::Cpu);
            let m = build_unchecked(e.name, &cfg, p.var_builder())?;
            assert_eq!(m.name(), e.name);
            let a = e.abilities;
            assert_eq!(m.as_density().is_some(), a.density, "{} density", e.name);
            assert_eq!(m.as_latent().is_some(), a.latent, "{} latent", e.name);
            assert_eq!(m.as_sequence().is_some(), a.sequence, "{} sequence", e.name);
            assert_eq!(m.as_complete().is_some(), a.complete, "{} complete", e.name);
            assert_eq!(m.as_denoiser().is_some(), a.denoiser, "{} denoiser", e.name);
            assert_eq!(
                m.as_adversarial().is_some(),
                a.adversarial,
                "{} adversarial",
                e.name
            );
            assert_eq!(
                m.as_decoder_based().is_some(),
                a.decoder_based,
                "{} decoder_based",
                e.name
            );
            assert_eq!(
                m.as_energy_based().is_some(),
                a.energy_based,
                "{} energy_based",
                e.name
            );
            if e.name == "cvae" {
                assert!(a.class_conditional && m.num_classes() == Some(10));
            }
            if !a.class_conditional {
                assert_eq!(m.num_classes(), None, "{}", e.name);
            }
        }
        Ok(())
    }

    /// Diffusion models and GANs (a tanh output) default to images in [−1, 1], flows and EBMs to dequantized
    /// pixels; the others to the data set's own preprocessing.
    #[test]
    fn default_preprocessing_per_row() -> Result<()> {
        for data in ["mnist", "shapes", "toy2d:moons"] {
            let spec = DataSpec::parse(data)?;
            for e in REGISTRY {
                let p = default_preprocessing(e.name, &spec);
                if ["diffusion", "gan"].contains(&e.family) && spec.kind() == DataKind::Images {
                    assert_eq!(
                        p,
                        Preprocessing::Scale {
                            range: crate::data::Range::MinusOneOne,
                            dequantize: false
                        }
                    );
                } else if ["flows", "ebm"].contains(&e.family) && spec.kind() == DataKind::Images {
                    // a continuous density needs dequantized pixels: flows in [0, 1], EBMs in [−1, 1]
                    let range = match e.family {
                        "flows" => crate::data::Range::ZeroOne,
                        _ => crate::data::Range::MinusOneOne,
                    };
                    assert_eq!(
                        p,
                        Preprocessing::Scale {
                            range,
                            dequantize: true
                        },
                        "{} {data}",
                        e.name
                    );
                } else {
                    assert_eq!(p, spec.default_preprocessing(), "{} {data}", e.name);
                }
            }
        }
        assert_eq!(
            default_preprocessing("nope", &DataSpec::Mnist),
            DataSpec::Mnist.default_preprocessing()
        );
        Ok(())
    }
}
