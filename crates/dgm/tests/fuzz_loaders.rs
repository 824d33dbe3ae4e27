//! Fuzzing the loaders of outside bytes (issue 13): a bounded, deterministic run of every target of the
//! harness in `tests/fuzz/` (the long campaign is `bench/fuzz_loaders`), plus one regression test per bug
//! the fuzzing found, each named after the bug.

mod fuzz;

use std::path::PathBuf;

use fuzz::{targets, Outcome, Target};

#[global_allocator]
static ALLOC: fuzz::TrackingAlloc = fuzz::TrackingAlloc;

/// Inputs per target in CI (the seeds included).
const CI_INPUTS: usize = 2000;
/// The generator seed of the CI run.
const CI_SEED: u64 = 13;

fn findings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

fn target(name: &str) -> Target {
    match targets::target(name) {
        Some(t) => t,
        None => panic!("no fuzz target {name}"),
    }
}

/// Runs `name` for [`CI_INPUTS`] inputs on an 8 MiB stack (the size of the CLI's main thread) and fails
/// with the findings (input index, kind, message, saved file) when any input panics, makes an allocation
/// over 64 MiB, or gets an error of more than one line.
fn check(name: &'static str) {
    let rep = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || fuzz::campaign(&target(name), CI_INPUTS, CI_SEED, &findings_dir()))
        .map(|h| h.join());
    match rep {
        Ok(Ok(rep)) => {
            println!("{} ({})", rep, rep.loader);
            assert!(rep.bad_seeds.is_empty(), "{rep}");
            assert!(rep.clean(), "{rep}");
            assert!(rep.ok > 0 && rep.errors > 0, "{rep}");
        }
        _ => panic!("the fuzz thread of {name} failed"),
    }
}

#[test]
fn fuzz_mnist_idx() {
    check("mnist")
}

#[test]
fn fuzz_omniglot_zip() {
    check("omniglot")
}

#[test]
fn fuzz_png_load_image() {
    check("png")
}

#[test]
fn fuzz_safetensors() {
    check("safetensors")
}

#[test]
fn fuzz_config_toml() {
    check("config")
}

#[test]
fn fuzz_config_set() {
    check("set")
}

#[test]
fn fuzz_tokenizer_in_config() {
    check("tokenizer")
}

#[test]
fn fuzz_state_json() {
    check("state")
}

#[test]
fn fuzz_checkpoint_manifest() {
    check("checkpoint")
}

#[test]
fn fuzz_text_corpus() {
    check("text")
}

#[test]
fn every_target_is_checked() {
    assert_eq!(targets::NAMES.len(), 10);
    for n in targets::NAMES {
        let t = target(n);
        assert!(!t.seeds.is_empty(), "{n}");
        let work = fuzz::work_dir(&format!("seeds-{n}"));
        let _ = std::fs::create_dir_all(&work);
        for s in &t.seeds {
            assert_eq!(fuzz::run_one(&t, &work, s).outcome, Outcome::Ok, "{n}");
        }
        let _ = std::fs::remove_dir_all(&work);
    }
}

// ------------------------------------------------------------------------------------------------------
// Regression tests, one per bug found, named after it.

/// A 1-channel PNG of `w`×`h` whose IHDR claims `claim_w`×`claim_h` (CRC fixed), with `extra` chunks.
fn png_claiming(
    w: u32,
    h: u32,
    claim: Option<(u32, u32)>,
    color: u8,
    extra: &[targets::Chunk],
) -> Vec<u8> {
    let mut rng = dgm::rng::Rng::new(0);
    let png = targets::make_png(w, h, 8, color, extra, &mut rng);
    let Some((cw, ch)) = claim else { return png };
    let mut chunks = targets::png_chunks(&png).unwrap_or_default();
    if let Some((_, d)) = chunks.first_mut() {
        d[..4].copy_from_slice(&cw.to_be_bytes());
        d[4..8].copy_from_slice(&ch.to_be_bytes());
    }
    targets::png_assemble(&chunks, true, &[])
}

fn omniglot_run(png: Vec<u8>) -> fuzz::Run {
    let t = target("omniglot");
    let zip = targets::make_zip(&[("a/0.png".to_string(), png)], true);
    let work = fuzz::work_dir("regression-omniglot");
    let _ = std::fs::create_dir_all(&work);
    let run = fuzz::run_one(&t, &work, &vec![zip]);
    let _ = std::fs::remove_dir_all(&work);
    run
}

fn png_run(png: Vec<u8>, c: u8, h: u8, w: u8) -> fuzz::Run {
    let t = target("png");
    let work = fuzz::work_dir("regression-png");
    let _ = std::fs::create_dir_all(&work);
    let run = fuzz::run_one(&t, &work, &vec![png, vec![c, h, w]]);
    let _ = std::fs::remove_dir_all(&work);
    run
}

/// A 32-byte PLTE (10 entries and 2 stray bytes): `png` 0.18.1 panics on it (palette.rs:74).
fn partial_palette() -> targets::Chunk {
    (*b"PLTE", (0..32).collect())
}

#[test]
fn omniglot_png_declaring_a_huge_image_is_refused_before_allocating() {
    // found by fuzzing (target omniglot): a 20000×20000 header on a tiny file made the decoder allocate
    // 400 MB before noticing the missing data
    let run = omniglot_run(png_claiming(10, 10, Some((20_000, 20_000)), 0, &[]));
    assert!(run.largest_alloc < fuzz::BIG_ALLOC, "{run:?}");
    match run.outcome {
        Outcome::Err(e) => assert!(e.contains("20000×20000") && e.contains("a/0.png"), "{e}"),
        o => panic!("{o:?}"),
    }
    // the same within the side limit but over the memory limit: refused by the decoder's limits
    let run = omniglot_run(png_claiming(10, 10, Some((4096, 4096)), 6, &[]));
    assert!(run.largest_alloc < fuzz::BIG_ALLOC, "{run:?}");
    assert!(matches!(run.outcome, Outcome::Err(_)), "{run:?}");
}

#[test]
fn omniglot_png_with_a_partial_palette_entry_is_an_error_not_a_panic() {
    // found by fuzzing (target omniglot/png): a PLTE chunk whose length is not a multiple of 3
    let run = omniglot_run(png_claiming(6, 5, None, 3, &[partial_palette()]));
    match run.outcome {
        Outcome::Err(e) => assert!(e.contains("PLTE") && !e.contains('\n'), "{e}"),
        o => panic!("{o:?}"),
    }
    // a whole palette still loads
    let ok = (*b"PLTE", vec![0, 0, 0, 255, 255, 255, 9, 9, 9, 7, 7, 7]);
    assert_eq!(
        omniglot_run(png_claiming(6, 5, None, 3, &[ok])).outcome,
        Outcome::Ok
    );
}

#[test]
fn saved_tokenizer_errors_are_one_line() -> dgm::Result<()> {
    // found by fuzzing (target tokenizer): toml's deserialisation messages end in a newline and may go on to
    // a second line ("in `kind`"); Tokenizer::from_toml_value makes them one line
    use dgm::data::Tokenizer;
    let parse = |s: &str| -> dgm::Result<Tokenizer> {
        let t: toml::Table = s
            .parse()
            .map_err(|e: toml::de::Error| dgm::Error::invalid("toml", e.to_string()))?;
        Tokenizer::from_toml_value(&toml::Value::Table(t))
    };
    for bad in [
        "kind = {}",
        "symbols = [1]",
        "kind = \"chars\"",
        "kind = \"chars\"\nsymbols = [300]",
    ] {
        let e = parse(bad).map(|_| ()).unwrap_err().to_string();
        assert!(
            !e.contains('\n') && e.contains("model.tokenizer"),
            "{bad}: {e:?}"
        );
    }
    let e = parse("kind = \"chars\"\nsymbols = [3, 2]")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("strictly increasing"), "{e}");
    assert_eq!(parse("kind = \"bytes\"")?, Tokenizer::Bytes);
    assert_eq!(
        parse("kind = \"chars\"\nsymbols = [10, 97]")?,
        Tokenizer::Chars {
            symbols: vec![10, 97]
        }
    );
    Ok(())
}

#[test]
fn omniglot_member_name_with_a_newline_gives_a_one_line_error() {
    // found by the campaign (target omniglot, input 505793): archive member names went into messages raw
    let t = target("omniglot");
    let zip = targets::make_zip(&[("a\nb.png".to_string(), b"not a png".to_vec())], true);
    let work = fuzz::work_dir("regression-omniglot-name");
    let _ = std::fs::create_dir_all(&work);
    let run = fuzz::run_one(&t, &work, &vec![zip]);
    let _ = std::fs::remove_dir_all(&work);
    match run.outcome {
        Outcome::Err(e) => assert!(!e.contains('\n') && e.contains("a\\nb.png"), "{e:?}"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn load_image_refuses_a_huge_declared_size_before_allocating() {
    let run = png_run(
        png_claiming(10, 10, Some((20_000, 20_000)), 0, &[]),
        1,
        10,
        10,
    );
    assert!(run.largest_alloc < fuzz::BIG_ALLOC, "{run:?}");
    assert!(matches!(run.outcome, Outcome::Err(_)), "{run:?}");
}

#[test]
fn load_image_with_a_partial_palette_entry_is_an_error_not_a_panic() {
    let run = png_run(png_claiming(6, 5, None, 3, &[partial_palette()]), 1, 5, 6);
    assert!(matches!(run.outcome, Outcome::Err(_)), "{run:?}");
}

#[test]
fn saved_tokenizer_with_a_missing_field_is_a_one_line_error() {
    let t = target("tokenizer");
    let run = fuzz::run_one(
        &t,
        &std::env::temp_dir(),
        &vec![b"kind = \"chars\"\n".to_vec()],
    );
    match run.outcome {
        Outcome::Err(e) => assert!(!e.contains('\n'), "{e:?}"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn config_and_set_errors_stay_one_line_with_newlines_in_names() {
    let toml = dgm::train::RunConfig::new("vae", "mnist")
        .and_then(|c| c.to_toml())
        .unwrap_or_default()
        .replace("name = \"mnist\"", "name = \"x\\n\"");
    let e = dgm::train::RunConfig::from_toml(&toml)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "{e:?}");
    let mut c = dgm::train::RunConfig::new("vae", "mnist").unwrap_or_else(|e| panic!("{e}"));
    let e = c.set("train.lr=1\n2").unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e:?}");
}
