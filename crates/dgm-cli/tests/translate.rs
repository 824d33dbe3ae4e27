//! `dgm translate` through the real binary: a GPT trained for a few steps on the generated parallel corpus
//! translates a sentence and scores held-out pairs; bad input gets one line and exit code 2.

mod common;

use common::*;

#[test]
fn translate_decodes_scores_and_refuses_bad_input() {
    let d = tmp("translate");
    let r = d.join("run");
    let o = run(&mut train_cmd(
        "gpt",
        "text:numbers-en-de",
        &r,
        3,
        &[
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=16",
            "data.text.context=48",
            "train.batch_size=4",
            "train.eval_batches=1",
        ],
    ));
    assert!(o.status.success(), "train: {}", stderr(&o));
    let o = run(dgm().args(["translate", "--run"]).arg(&r).args([
        "--beam",
        "2",
        "--max-tokens",
        "8",
        "twenty-three",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    // --beam 1 is greedy: the same as sampling with top-k 1 up to the newline
    let greedy = run(dgm().args(["translate", "--run"]).arg(&r).args([
        "--beam",
        "1",
        "--max-tokens",
        "8",
        "twenty-three",
    ]));
    let sampled = run(dgm().args(["sample", "--run"]).arg(&r).args([
        "--prompt",
        "\ntwenty-three = ",
        "--top-k",
        "1",
        "--max-tokens",
        "8",
    ]));
    assert!(greedy.status.success() && sampled.status.success());
    let g = stdout(&greedy).trim_end_matches('\n').to_string();
    let s = stdout(&sampled);
    let s = s.strip_prefix("\ntwenty-three = ").unwrap_or(&s);
    assert_eq!(
        s.split('\n').next().unwrap_or(""),
        g,
        "greedy {g:?} vs top-k 1 {s:?}"
    );
    let o = run(dgm().args(["translate", "--run"]).arg(&r).args([
        "--eval",
        "--limit",
        "3",
        "--beam",
        "2",
        "--max-tokens",
        "8",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("3 held-out pairs") && out.contains("greedy") && out.contains("beam 2"),
        "{out}"
    );

    for (args, needles) in [
        (vec![""], vec!["empty"]),
        (vec!["a = b"], vec!["'='"]),
        (vec!["Twenty"], vec!["vocabulary"]),
        (vec!["--beam", "0", "one"], vec!["--beam"]),
    ] {
        let o = run(dgm().args(["translate", "--run"]).arg(&r).args(&args));
        assert_bad_input(&o, &needles);
    }
    // --eval needs a parallel corpus; translate needs a language model
    let text = d.join("corpus.txt");
    std::fs::write(&text, "one = eins\ntwo = zwei\n".repeat(50)).unwrap();
    let r2 = d.join("plain");
    let o = run(&mut train_cmd(
        "gpt",
        &format!("text:{}", text.display()),
        &r2,
        1,
        &[
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=16",
            "data.text.context=16",
            "train.batch_size=4",
            "train.eval_batches=1",
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm().args(["translate", "--run"]).arg(&r2).arg("--eval"));
    assert_bad_input(&o, &["--eval", "numbers-en-de"]);
    let o = run(dgm()
        .args(["translate", "--run"])
        .arg(&r2)
        .args(["--max-tokens", "4", "one"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let r3 = d.join("vae");
    let o = run(&mut train_cmd("vae", "toy2d:moons", &r3, 1, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm().args(["translate", "--run"]).arg(&r3).arg("one"));
    assert_bad_input(&o, &["language model"]);
}
