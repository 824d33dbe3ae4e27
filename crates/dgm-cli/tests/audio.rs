//! Audio through the real binary: a tiny WaveNet trained on spoken-digits, `dgm sample` writing a WAV and its
//! spectrogram, `dgm score --audio`, `dgm eval`, and the bad inputs (not a WAV, another rate, too long, flags
//! that do not apply) answered with one line and exit code 2.

mod common;

use common::*;

/// A tiny WaveNet trained for two steps on spoken-digits into `d/run` (`None` without DGM_DATA).
fn train_tiny(d: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let data = find_data(
        std::env::var_os("CI"),
        std::env::var_os("DGM_DATA"),
        "spoken-digits",
    )?;
    let r = d.join("run");
    let o = run(train_cmd(
        "wavenet",
        "spoken-digits",
        &r,
        2,
        &[
            "model.channels=4",
            "model.skip_channels=4",
            "model.dilations=[1, 2, 4]",
            "model.train_window=64",
            "train.batch_size=4",
            "train.eval_batches=1",
        ],
    )
    .arg("--data-dir")
    .arg(&data));
    assert!(o.status.success(), "train: {}", stderr(&o));
    // the checkpoint's samples: one clip per digit and the spectrogram
    let (clips, rate) = dgm::data::audio::read_wav(&r.join("samples/samples.wav")).unwrap();
    assert_eq!((clips.len(), rate), (10 * 8000 + 9 * 2000, 8000));
    assert!(r.join("samples/samples.png").is_file());
    Some((r, data))
}

#[test]
fn wavenet_samples_and_scores_clips_and_refuses_bad_input() {
    let d = tmp("wavenet");
    // `data` is DGM_DATA resolved against the workspace root (CI passes a relative path)
    let Some((r, data)) = train_tiny(&d) else {
        return;
    };

    // one clip, its spectrogram beside it, the same bits for the same seed
    let seven = d.join("seven.wav");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--class", "7", "--timing", "--out"])
        .arg(&seven));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("seven.png") && stderr(&o).contains("samples/s"));
    let (x, rate) = dgm::data::audio::read_wav(&seven).unwrap();
    assert_eq!((x.len(), rate), (8000, 8000));
    let png = image::open(d.join("seven.png")).unwrap();
    assert_eq!(png.height(), 129);
    let again = d.join("again.wav");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--class", "7", "--out"])
        .arg(&again));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&seven).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // two clips of two digits, joined with 0.25 s of silence
    let two = d.join("two.wav");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "2", "--class", "1,2", "--out"])
        .arg(&two));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(dgm::data::audio::read_wav(&two).unwrap().0.len(), 18_000);

    // scoring a clip: under one class, and under each class with the most likely one
    let clip = d.join("clip.wav");
    dgm::data::audio::write_wav(&clip, &x[..3000], 8000).unwrap();
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .args(["--class", "3", "--audio"])
        .arg(&clip));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("class 3 (three)") && out.contains("bits/sample (exact)"),
        "{out}"
    );
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .arg("--audio")
        .arg(&clip));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("bits/sample").count(), 10, "{out}");
    assert!(out.contains("most likely class"), "{out}");

    // the test split's exact NLL through `dgm eval`
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--split", "test", "--limit", "4", "--data-dir"])
        .arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("exact"), "{}", stdout(&o));

    // bad input: one line, exit 2
    let text = d.join("notes.wav");
    std::fs::write(&text, "not audio").unwrap();
    let fast = d.join("fast.wav");
    dgm::data::audio::write_wav(&fast, &x[..100], 16000).unwrap();
    let long = d.join("long.wav");
    dgm::data::audio::write_wav(&long, &vec![0.1; 9000], 8000).unwrap();
    for (file, needles) in [
        (&text, vec!["notes.wav", "WAV"]),
        (&fast, vec!["fast.wav", "16000 Hz", "8000 Hz"]),
        (&long, vec!["long.wav", "9000 samples"]),
    ] {
        let o = run(dgm()
            .args(["score", "--run"])
            .arg(&r)
            .arg("--audio")
            .arg(file));
        assert_bad_input(&o, &needles);
    }
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .arg("--text")
        .arg(&text));
    assert_bad_input(&o, &["--audio"]);
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .args(["--class", "12", "--audio"])
        .arg(&clip));
    assert_bad_input(&o, &["--class", "12"]);
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .args(["--summary", "--audio"])
        .arg(&clip));
    assert_bad_input(&o, &["--summary"]);
    for (args, needles) in [
        (
            vec!["--class", "7", "--out", "x.png"],
            vec!["--out", ".wav"],
        ),
        (vec!["--out", "x.wav"], vec!["class"]),
        (vec!["--class", "10", "--out", "x.wav"], vec!["10"]),
        (
            vec!["--class", "1", "--prompt", "hi", "--out", "x.wav"],
            vec!["--prompt"],
        ),
    ] {
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(&args)
            .current_dir(&*d));
        assert_bad_input(&o, &needles);
    }
}
