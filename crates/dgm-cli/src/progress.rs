//! Console rendering of the library's [`Event`]s: an indicatif bar while training on a terminal, plain
//! periodic lines otherwise (CI logs, pipes), and throttled lines for long evaluations.

use std::io::IsTerminal;
use std::time::Instant;

use dgm::events::Event;
use indicatif::{ProgressBar, ProgressStyle};

/// Renders the events of one `dgm train` session; prints nothing when quiet.
pub struct TrainProgress {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl TrainProgress {
    /// A renderer; the bar appears at [`Event::TrainStart`] when stdout is a terminal.
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None }
    }

    /// Shows one event.
    pub fn on(&mut self, e: &Event) {
        match e {
            Event::RestartWithoutCheckpoint { run } => {
                if !self.quiet {
                    println!(
                        "{} has no checkpoint yet (it stopped before its first one): restarting it from step 0",
                        run.display()
                    );
                }
            }
            Event::TrainStart {
                model,
                data,
                examples,
                preprocessing,
                parameters,
                run,
                start_step,
                total_steps,
            } => {
                self.bar = (!self.quiet && std::io::stdout().is_terminal()).then(|| {
                    let b = ProgressBar::new(*total_steps);
                    let style = ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    b.set_style(style);
                    b.set_position(*start_step);
                    b
                });
                if *start_step == 0 {
                    self.println(&format!(
                        "training {model} on {data} ({examples} examples, {preprocessing}) with {parameters} parameters → {}",
                        run.display()
                    ));
                }
            }
            Event::Step {
                step,
                total_steps,
                it_s,
                logged,
            } => {
                let msg = logged
                    .as_ref()
                    .map(|l| {
                        l.losses
                            .iter()
                            .map(|(k, v)| format!("{k} {v:.4}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                match &self.bar {
                    Some(b) => {
                        b.set_position(*step);
                        b.set_message(format!("{msg} {it_s:.1} it/s"));
                    }
                    None if logged.is_some() && !self.quiet => {
                        let eta = (total_steps - step.min(total_steps)) as f64 / it_s.max(1e-9);
                        println!(
                            "step {step}/{total_steps} {msg} {it_s:.1} it/s eta {}",
                            fmt_secs(eta)
                        );
                    }
                    None => {}
                }
            }
            Event::Validation {
                step,
                loss,
                loss_ema,
            } => self.println(&format!(
                "step {step} validation loss {loss:.4} (EMA weights {loss_ema:.4})"
            )),
            Event::SamplesWritten { .. } | Event::CheckpointWritten { .. } => {}
            Event::StepsEnded { .. } => self.finish(),
            Event::Interrupted { step, run } => {
                self.finish();
                if !self.quiet {
                    println!(
                        "stopped at step {step} with a checkpoint; continue with: dgm train --resume {}",
                        run.display()
                    );
                }
            }
            Event::Done {
                step,
                samples,
                loss_curve,
                row_captions,
            } => {
                if !self.quiet {
                    let wav = samples.extension().is_some_and(|e| e == "wav");
                    println!(
                        "done: {step} steps. Open {} to {} samples; the loss curve is {}",
                        samples.display(),
                        if wav {
                            "hear (a clip per class; the spectrogram is beside it)"
                        } else {
                            "see"
                        },
                        loss_curve.display()
                    );
                    if wav {
                        if let Some(run) = samples.parent().and_then(|p| p.parent()) {
                            println!(
                                "one clip of your own: dgm sample --run {} --class 7 --out seven.wav",
                                run.display()
                            );
                        }
                    }
                    if let Some(rows) = row_captions {
                        println!("each row of the grid is drawn from one caption:");
                        for (i, c) in rows.iter().enumerate() {
                            println!("  {}. {c}", i + 1);
                        }
                        if let Some(run) = samples.parent().and_then(|p| p.parent()) {
                            println!(
                                "your own caption: dgm sample --run {} --caption \"a large yellow star in the centre\" --guidance 3 -n 16 --out star.png",
                                run.display()
                            );
                        }
                    }
                    // samples are RUN/samples/samples.png; the studio lists the runs of RUN's folder
                    let folder = samples
                        .ancestors()
                        .nth(3)
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    println!(
                        "to sample, edit and score it in your browser: dgm studio --runs {} (then open http://127.0.0.1:7860/)",
                        folder.display()
                    );
                }
            }
            Event::EvalProgress { .. } => eval_line(e),
        }
    }

    /// Removes the bar (training ended, or failed).
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// Prints a line without breaking the bar.
    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => println!("{line}"),
            None => {}
        }
    }
}

/// Prints an [`Event::EvalProgress`] to stderr.
fn eval_line(e: &Event) {
    if let Event::EvalProgress {
        label,
        done,
        total,
        elapsed_s,
    } = e
    {
        eprintln!("{label}: {done}/{total} examples, {elapsed_s:.0} s");
    }
}

/// A progress callback for the library's evaluations that speaks (as [`Event::EvalProgress`]) at most
/// every 10 s.
pub fn throttled(label: String) -> impl FnMut(usize, usize) {
    let started = Instant::now();
    let mut last = started;
    move |done: usize, total: usize| {
        if last.elapsed().as_secs() >= 10 {
            eval_line(&Event::EvalProgress {
                label: label.clone(),
                done,
                total,
                elapsed_s: started.elapsed().as_secs_f64(),
            });
            last = Instant::now();
        }
    }
}

/// "1h02m", "3m05s", "12s".
pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}
