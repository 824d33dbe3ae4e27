//! Evaluates a WaveNet run on spoken-digits (the numbers of `bench/wavenet_digits`):
//!
//! 1. the exact test NLL (280 clips of the 4 held-out voices), in bits per sample over the whole 1 s clip
//!    (the word and the silence padding after it) and over the word alone (each clip's own samples);
//! 2. a digit classifier — dgm's feature network on 32×32 spectrogram images — trained on the 980 training
//!    clips, with its accuracy on the test clips;
//! 3. PER_DIGIT generated clips per digit: the classifier's accuracy for the requested digit, and the Fréchet
//!    distance between the classifier's features of generated and test clips ("FID-style"), next to the same
//!    distance between the training and test clips (the value real speech of other voices gets);
//! 4. generation speed: samples/s of the queued (fast) path for one clip and for a batch, and of the naive
//!    path (a forward pass over the receptive field per sample) for one clip's first SLOW_STEPS samples
//!    (default 2048: the receptive field is full from sample 1024 on).
//!
//! `cargo run --release --example wavenet_digits -- RUN [PER_DIGIT] [SLOW_STEPS]` with `DGM_DATA` set.
//! Prints a JSON line per result.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::data::{audio, Dataset, Split, Storage};
use dgm::metrics::features::{train_feature_net_on, FeatureNetConfig, FeatureTrainConfig};
use dgm::metrics::quality::{class_accuracy, fid};
use dgm::model::{Condition, LikelihoodOptions, SampleOptions};
use dgm::models::autoregressive::wavenet::{WaveNet, WaveNetConfig};
use dgm::train::run::{self, Weights};

/// Errors of this example.
type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run_dir = PathBuf::from(
        args.first()
            .ok_or_else(|| "usage: wavenet_digits RUN [PER_DIGIT] [SLOW_STEPS]".to_string())?,
    );
    let per_digit: usize = args.get(1).map_or(Ok(100), |s| s.parse())?;
    let slow_steps: usize = args.get(2).map_or(Ok(2048), |s| s.parse())?;
    let data_dir = dgm::data::data_dir(None);
    let dev = Device::Cpu;
    println!(
        "{{\"isa\":\"{}\",\"threads\":{}}}",
        dgm::nn::kernels::isa::isa().name(),
        rayon::current_num_threads()
    );

    let loaded = run::load(&run_dir, Weights::Ema, &dev)?;
    let cfg: WaveNetConfig = dgm::models::from_table(&loaded.config.model.config)?;
    let net = WaveNet::new(cfg.clone(), loaded.params.var_builder())?;
    let step = loaded.state.step;

    // 1. exact test NLL
    let test = audio::dataset(&data_dir, Split::Test)?;
    let clips = audio::load_spoken_digits(&data_dir, Split::Test)?;
    let t0 = Instant::now();
    let (mut whole, mut word, mut word_samples) = (0.0f64, 0.0f64, 0usize);
    let mut first_clip = None;
    for start in (0..test.len()).step_by(4) {
        let idx: Vec<usize> = (start..(start + 4).min(test.len())).collect();
        let batch = test.batch(
            &idx,
            &loaded.config.data.preprocessing,
            &mut dgm::rng::Rng::new(0),
            &dev,
        )?;
        let lp = net.log_probs_per_sample(&batch)?.to_vec2::<f32>()?;
        for (row, &i) in lp.iter().zip(&idx) {
            let n = clips[i].samples.len();
            first_clip.get_or_insert(-row.iter().map(|&v| v as f64).sum::<f64>());
            whole -= row.iter().map(|&v| v as f64).sum::<f64>();
            word -= row[..n].iter().map(|&v| v as f64).sum::<f64>();
            word_samples += n;
        }
    }
    // the library's likelihood of clip 0, to compare with the sum above (a check of this script)
    let check = loaded
        .model
        .as_density()
        .ok_or("not a density")?
        .log_likelihood(
            &test.batch(
                &[0, 1],
                &loaded.config.data.preprocessing,
                &mut dgm::rng::Rng::new(0),
                &dev,
            )?,
            &LikelihoodOptions::default(),
        )?;
    let ln2 = std::f64::consts::LN_2;
    let total = (test.len() * cfg.length) as f64;
    println!(
        "{{\"what\":\"test_nll\",\"run\":\"{}\",\"step\":{step},\"clips\":{},\"bits_per_sample_whole_clip\":{:.4},\"bits_per_sample_word\":{:.4},\"word_samples\":{word_samples},\"nats_per_clip\":{:.1},\"nats_clip0\":{:.1},\"library_nats_clip0\":{:.1},\"seconds\":{:.1}}}",
        run_dir.display(),
        test.len(),
        whole / (total * ln2),
        word / (word_samples as f64 * ln2),
        whole / test.len() as f64,
        first_clip.unwrap_or(f64::NAN),
        -check.nats[0],
        t0.elapsed().as_secs_f64()
    );

    // 2. the digit classifier on spectrograms
    let t0 = Instant::now();
    let train_spec = audio::spectrogram_dataset(&audio::dataset(&data_dir, Split::Train)?)?;
    let test_spec = audio::spectrogram_dataset(&test)?;
    let train_cfg = FeatureTrainConfig {
        epochs: 30,
        batch_size: 64,
        max_shift: 2,
        log_every: 0,
        ..FeatureTrainConfig::default()
    };
    let classifier = train_feature_net_on(
        &train_spec,
        &test_spec,
        &FeatureNetConfig::default(),
        &train_cfg,
        &dev,
        &mut |_| {},
    )?;
    println!(
        "{{\"what\":\"classifier\",\"test_accuracy\":{:.4},\"train_clips\":{},\"test_clips\":{},\"seconds\":{:.1}}}",
        classifier.info.test_accuracy,
        train_spec.len(),
        test_spec.len(),
        t0.elapsed().as_secs_f64()
    );
    let embed = |ds: &Dataset| -> Res<dgm::metrics::features::Embedding> {
        let Storage::U8(px) = &ds.storage else {
            return Err("spectrograms are 8-bit images".into());
        };
        let side = audio::SPEC_IMAGE;
        let x = Tensor::from_vec(
            px.iter().map(|&v| v as f32 / 255.0).collect::<Vec<f32>>(),
            (ds.len(), 1, side, side),
            &dev,
        )?;
        Ok(classifier.net.embed(&x, 256)?)
    };
    let test_emb = embed(&test_spec)?;
    let train_emb = embed(&train_spec)?;
    let real_fid = fid(&train_emb.features, &test_emb.features, test_emb.dim)?;

    // 3. generated clips, PER_DIGIT per digit, in batches of 250
    let t0 = Instant::now();
    let mut codes = Vec::new();
    let wanted: Vec<u32> = (0..10 * per_digit)
        .map(|i| (i / per_digit) as u32)
        .collect();
    for (b, chunk) in wanted.chunks(250).enumerate() {
        let mut opts = SampleOptions::seeded(1000 + b as u64);
        opts.condition = Condition::Class(chunk.to_vec());
        codes.extend(
            net.generate(chunk.len(), &opts)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    let gen_secs = t0.elapsed().as_secs_f64();
    let generated = Dataset {
        name: "generated".into(),
        example_shape: vec![cfg.length],
        storage: Storage::F32(codes),
        labels: Some(wanted.clone()),
        num_classes: Some(10),
        class_names: None,
        captions: None,
    };
    let gen_emb = embed(&audio::spectrogram_dataset(&generated)?)?;
    let acc = class_accuracy(&gen_emb.predicted, &wanted, 10)?;
    let gen_fid = fid(&gen_emb.features, &test_emb.features, test_emb.dim)?;
    println!(
        "{{\"what\":\"generated\",\"clips\":{},\"digit_accuracy\":{:.4},\"per_digit\":{:?},\"fid_generated_vs_test\":{gen_fid:.2},\"fid_train_vs_test\":{real_fid:.2},\"seconds\":{gen_secs:.1},\"samples_per_s_batch\":{:.0}}}",
        wanted.len(),
        acc.overall,
        acc.per_class.iter().map(|a| (a * 1000.0).round() / 1000.0).collect::<Vec<f64>>(),
        (wanted.len() * cfg.length) as f64 / gen_secs
    );

    // 4. speed of one clip: queued vs naive
    let mut opts = SampleOptions::seeded(7);
    opts.condition = Condition::Class(vec![7]);
    let t0 = Instant::now();
    let fast = net.generate(1, &opts)?;
    let fast_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let slow = net.generate_slow(1, slow_steps, &opts)?;
    let slow_s = t0.elapsed().as_secs_f64();
    let same = fast.narrow(1, 0, slow_steps)?.to_vec2::<f32>()? == slow.to_vec2::<f32>()?;
    println!(
        "{{\"what\":\"speed_one_clip\",\"fast_samples_per_s\":{:.0},\"slow_samples_per_s\":{:.1},\"slow_steps\":{slow_steps},\"receptive_field\":{},\"fast_equals_slow\":{same}}}",
        cfg.length as f64 / fast_s,
        slow_steps as f64 / slow_s,
        cfg.receptive_field()
    );
    Ok(())
}
