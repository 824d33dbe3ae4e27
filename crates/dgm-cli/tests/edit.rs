//! Integration tests of `dgm edit inpaint | super-resolve | colorize | deblur | reconstruct | sdedit`: the real
//! binary on tiny diffusion runs — every task writes its grid, a sinogram read from .npy or CSV gives the same
//! reconstruction as the image it came from, and bad input exits 2 with one line and writes nothing.

mod common;

use common::{assert_bad_input, dgm, run, shared_data, stderr, stdout, tmp};
use std::path::Path;
use std::process::Output;

/// A tiny `model` trained for 2 steps on `data` (from `DGM_DATA` = `dir` when given).
fn train(out: &Path, model: &str, data: &str, dir: Option<&Path>, extra: &[&str]) -> Output {
    let mut c = dgm();
    if let Some(dir) = dir {
        c.env("DGM_DATA", dir);
    }
    run(c
        .args(["train", model, "--data", data, "--out"])
        .arg(out)
        .args(["--steps", "2", "--seed", "7", "--quiet"])
        .args(["--set", "data.sizes.train=32"])
        .args(["--set", "data.sizes.validation=8"])
        .args(["--set", "data.sizes.test=8"])
        .args(["--set", "train.batch_size=8"])
        .args(["--set", "train.eval_batches=1"])
        .args(extra))
}

const SMALL_UNET: &[&str] = &[
    "--set",
    "model.net.unet.base_channels=16",
    "--set",
    "model.net.unet.attention_resolutions=[]",
];

/// A `side × side` image: a bright disk on black, RGB or grey.
fn disk_png(path: &Path, side: u32, rgb: bool) {
    let inside = |x: u32, y: u32| {
        let (dx, dy) = (x as i64 - side as i64 / 2, y as i64 - side as i64 / 2);
        dx * dx + dy * dy < (side as i64 / 4).pow(2)
    };
    if rgb {
        image::RgbImage::from_fn(side, side, |x, y| match inside(x, y) {
            true => image::Rgb([220, 40, 30]),
            false => image::Rgb([0, 0, 0]),
        })
        .save(path)
        .unwrap();
    } else {
        image::GrayImage::from_fn(side, side, |x, y| {
            image::Luma([if inside(x, y) { 230 } else { 0 }])
        })
        .save(path)
        .unwrap();
    }
}

/// `dgm edit TASK --run r --image in --out out -n 2 --steps 3 ARGS…`
fn edit(task: &str, r: &Path, image: Option<&Path>, out: &Path, args: &[&str]) -> Output {
    let mut c = dgm();
    c.args(["edit", task, "--run"]).arg(r);
    if let Some(i) = image {
        c.arg("--image").arg(i);
    }
    run(c
        .arg("--out")
        .arg(out)
        .args(["-n", "2", "--steps", "3"])
        .args(args))
}

#[test]
fn every_edit_task_writes_its_grid_and_bad_input_writes_nothing() {
    let d = tmp("edit-shapes");
    let r = d.join("run");
    let o = train(&r, "ddpm", "shapes", None, SMALL_UNET);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = d.join("in.png");
    disk_png(&img, 32, true);
    let mask = d.join("mask.png");
    image::GrayImage::from_fn(32, 32, |x, y| {
        image::Luma([if (8..20).contains(&x) && (8..20).contains(&y) {
            255
        } else {
            0
        }])
    })
    .save(&mask)
    .unwrap();
    let m = mask.to_str().unwrap();
    let tasks: &[(&str, &[&str])] = &[
        ("inpaint", &["--mask", "centre"]),
        (
            "inpaint",
            &[
                "--mask",
                m,
                "--solver",
                "project",
                "--resample",
                "2",
                "--jump",
                "2",
            ],
        ),
        (
            "inpaint",
            &[
                "--mask",
                "random:0.7",
                "--solver",
                "dps",
                "--sigma-y",
                "0.05",
            ],
        ),
        (
            "inpaint",
            &[
                "--mask",
                "bottom",
                "--solver",
                "sdedit",
                "--strength",
                "0.5",
            ],
        ),
        ("super-resolve", &["--factor", "4"]),
        ("super-resolve", &["--solver", "dps"]),
        ("colorize", &[]),
        ("deblur", &["--blur-sigma", "1.5"]),
        ("deblur", &["--solver", "project", "--cg-iters", "3"]),
        ("sdedit", &["--strength", "0.4"]),
    ];
    for (i, (task, args)) in tasks.iter().enumerate() {
        let out = d.join(format!("{task}-{i}.png"));
        let o = edit(task, &r, Some(&img), &out, args);
        assert!(o.status.success(), "{task} {args:?}: {}", stderr(&o));
        assert!(out.is_file(), "{task} {args:?}");
        let s = stdout(&o);
        assert!(
            s.contains(task) && s.contains("2 samples") && s.contains("sampler "),
            "{s}"
        );
        if *task != "sdedit" {
            assert!(s.contains("PSNR") && s.contains("SSIM"), "{s}");
        }
        let grid = image::open(&out).unwrap();
        let tiles = if *task == "sdedit" { 3 } else { 4 };
        assert!(grid.width() >= tiles * 32, "{task}: {} wide", grid.width());
    }
    // the same seed gives the same edit
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    for p in [&a, &b] {
        assert!(edit("sdedit", &r, Some(&img), p, &["--seed", "4"])
            .status
            .success());
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // bad input: one line, exit 2, nothing written
    let grey_mask = d.join("grey.png");
    image::GrayImage::from_pixel(32, 32, image::Luma([128]))
        .save(&grey_mask)
        .unwrap();
    let small_mask = d.join("small.png");
    image::GrayImage::from_pixel(16, 16, image::Luma([0]))
        .save(&small_mask)
        .unwrap();
    let (gm, sm) = (grey_mask.to_str().unwrap(), small_mask.to_str().unwrap());
    let bad: &[(&str, &[&str], &[&str])] = &[
        (
            "inpaint",
            &["--mask", "centre", "--solver", "magic"],
            &["magic", "repaint", "dps"],
        ),
        ("inpaint", &["--mask", gm], &["black", "white"]),
        ("inpaint", &["--mask", sm], &["16×16", "32×32"]),
        ("inpaint", &["--mask", "nowhere"], &["--mask", "centre"]),
        ("inpaint", &["--mask", "random:1.5"], &["--mask", "[0, 1]"]),
        (
            "inpaint",
            &["--mask", "centre", "--sigma-y", "0.1"],
            &["--sigma-y", "dps"],
        ),
        (
            "inpaint",
            &["--mask", "centre", "--sampler", "heun"],
            &["--sampler", "heun"],
        ),
        (
            "inpaint",
            &["--mask", "centre", "--strength", "0.5"],
            &["--strength", "sdedit"],
        ),
        (
            "colorize",
            &["--solver", "repaint"],
            &["--solver", "colorize"],
        ),
        ("sdedit", &["--strength", "1.5"], &["--strength", "(0, 1]"]),
        ("sdedit", &["--strength", "0"], &["--strength", "(0, 1]"]),
        ("super-resolve", &["--factor", "3"], &["--factor", "3"]),
        ("deblur", &["--blur-sigma=-1"], &["--blur-sigma"]),
        ("reconstruct", &["--views", "8"], &["grey", "3 channels"]),
        ("reconstruct", &["--operator", "mri"], &["mri", "ct"]),
        ("deblur", &["--dps-scale", "0"], &["--dps-scale"]),
        (
            "deblur",
            &["--solver", "project", "--dps-scale", "2"],
            &["--dps-scale", "dps", "project"],
        ),
        (
            "inpaint",
            &["--mask", "centre", "--solver", "dps", "--jump", "2"],
            &["--jump", "repaint"],
        ),
        (
            "colorize",
            &["--resample", "2", "--solver", "dps"],
            &["--resample"],
        ),
        (
            "colorize",
            &["--cg-iters", "2", "--solver", "dps"],
            &["--cg-iters"],
        ),
        ("sdedit", &["--sigma-y", "0.1"], &["--sigma-y", "sdedit"]),
        (
            "inpaint",
            &["--mask", "centre", "--class", "2"],
            &["unconditional"],
        ),
        (
            "inpaint",
            &["--mask", "centre", "--guidance", "3"],
            &["--guidance"],
        ),
    ];
    let out = d.join("never.png");
    for (task, args, needles) in bad {
        let o = edit(task, &r, Some(&img), &out, args);
        assert_bad_input(&o, needles);
        assert!(!out.exists(), "{task} {args:?} wrote its output");
    }
    for (n, needle) in [("0", "at least 1"), ("100000000000", "more than")] {
        let o = run(dgm()
            .args(["edit", "colorize", "--run"])
            .arg(&r)
            .arg("--image")
            .arg(&img)
            .arg("--out")
            .arg(&out)
            .args(["-n", n]));
        assert_bad_input(&o, &["-n", needle]);
        assert!(!out.exists());
    }
    let o = edit("colorize", &r, None, &out, &[]);
    assert_bad_input(&o, &["--image"]);
    let o = edit(
        "inpaint",
        &r,
        Some(&d.join("missing.png")),
        &out,
        &["--mask", "centre"],
    );
    assert_bad_input(&o, &["missing.png"]);
    // a model that is not a diffusion model
    let vae = d.join("vae");
    let o = train(&vae, "vae", "shapes", None, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = edit("inpaint", &vae, Some(&img), &out, &["--mask", "centre"]);
    assert_bad_input(&o, &["vae", "ddpm", "edm", "ncsn"]);
    assert!(!out.exists());
}

/// Writes a sinogram `.npy` (f32, 2-D) as CSV, one row per view, values in Rust's round-trip formatting.
fn npy_to_csv(npy: &Path, csv: &Path) -> (usize, usize) {
    let b = std::fs::read(npy).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = String::from_utf8_lossy(&b[10..10 + hlen]).to_string();
    assert!(header.contains("<f4"), "{header}");
    let shape: Vec<usize> = header
        .split("'shape':")
        .nth(1)
        .unwrap()
        .split(['(', ')'])
        .nth(1)
        .unwrap()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (v, det) = (shape[0], shape[1]);
    let vals: Vec<f32> = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(vals.len(), v * det);
    let text: Vec<String> = vals
        .chunks(det)
        .map(|row| {
            row.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    std::fs::write(csv, text.join("\n")).unwrap();
    (v, det)
}

#[test]
fn reconstruct_from_a_sinogram_file_equals_reconstruct_from_the_image() {
    let Some(data) = shared_data() else { return };
    let d = tmp("edit-ct");
    let r = d.join("run");
    let o = train(&r, "ddpm", "mnist", Some(&data), SMALL_UNET);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = d.join("digit.png");
    disk_png(&img, 28, false);
    let (a, b, c) = (d.join("a.png"), d.join("b.png"), d.join("c.png"));
    let npy = d.join("sino.npy");
    let o = edit(
        "reconstruct",
        &r,
        Some(&img),
        &a,
        &["--views", "8", "--save-measurement", npy.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ct, 8 views") || stdout(&o).contains("8 views"),
        "{}",
        stdout(&o)
    );
    let o = edit(
        "reconstruct",
        &r,
        Some(&img),
        &b,
        &["--views", "8", "--sinogram", npy.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        ".npy"
    );
    let csv = d.join("sino.csv");
    let (views, det) = npy_to_csv(&npy, &csv);
    assert_eq!(views, 8);
    let o = edit(
        "reconstruct",
        &r,
        Some(&img),
        &c,
        &["--views", "8", "--sinogram", csv.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&c).unwrap(),
        ".csv"
    );
    // without --image the sinogram alone is enough
    let o = edit(
        "reconstruct",
        &r,
        None,
        &c,
        &["--views", "8", "--sinogram", csv.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // bad measurements and views
    let out = d.join("never.png");
    let short = d.join("short.csv");
    std::fs::write(&short, "1,2,3\n4,5,6\n").unwrap();
    let nan = d.join("nan.csv");
    let row = vec!["0"; det].join(",");
    let mut rows = vec![row; views];
    rows[0] = format!("NaN{}", &rows[0][1..]);
    std::fs::write(&nan, rows.join("\n")).unwrap();
    let text = d.join("words.csv");
    std::fs::write(&text, "a,b\n").unwrap();
    let bad: &[(&[&str], &[&str])] = &[
        (&["--views", "0"], &["--views"]),
        (
            &["--views", "8", "--sinogram", short.to_str().unwrap()],
            &["6 values", "[8, 41]"],
        ),
        (
            &["--views", "16", "--sinogram", csv.to_str().unwrap()],
            &["values", "[16"],
        ),
        (
            &["--views", "8", "--sinogram", nan.to_str().unwrap()],
            &["finite"],
        ),
        (
            &["--views", "8", "--sinogram", text.to_str().unwrap()],
            &["'a' is not a number"],
        ),
        (
            &["--views", "8", "--sinogram", img.to_str().unwrap()],
            &[".npy or .csv"],
        ),
        (
            &["--views", "8", "--solver", "repaint"],
            &["repaint", "reconstruct"],
        ),
        (&["--views", "8", "--sigma-y", "0.1"], &["--sigma-y", "dps"]),
    ];
    for (args, needles) in bad {
        let o = edit("reconstruct", &r, Some(&img), &out, args);
        assert_bad_input(&o, needles);
        assert!(!out.exists(), "{args:?} wrote its output");
    }
}
