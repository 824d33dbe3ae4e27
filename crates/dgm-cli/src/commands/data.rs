//! `dgm data info`: where the data directory is and which data sets are found in it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use dgm::data;

pub(super) fn data_info(explicit: Option<&Path>) -> Result<ExitCode> {
    let dir = data::data_dir(explicit);
    let how = match (explicit, std::env::var_os(data::DATA_ENV)) {
        (Some(_), _) => "from --data-dir".to_string(),
        (None, Some(_)) => format!("from ${}", data::DATA_ENV),
        (None, None) => format!("default; set ${} or --data-dir to change", data::DATA_ENV),
    };
    println!("data directory: {} ({how})", dir.display());
    let mnist = match data::mnist::find(&dir) {
        Some(p) => format!("found in {}", p.display()),
        None => "not found (needs mnist/train-images-idx3-ubyte.gz and the other three IDX files)"
            .into(),
    };
    println!("{:<22} {mnist}", "mnist");
    let shake: PathBuf = dir.join("tinyshakespeare").join("input.txt");
    let text = if shake.is_file() {
        format!("found: {}", shake.display())
    } else {
        "not found".into()
    };
    println!("{:<22} {text}", "text:tinyshakespeare");
    println!(
        "{:<22} generated in code (RGB 32×32, labels and captions)",
        "shapes"
    );
    for n in data::toy2d::NAMES {
        println!("{:<22} generated in code", format!("toy2d:{n}"));
    }
    Ok(ExitCode::SUCCESS)
}
