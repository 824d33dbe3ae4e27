//! What the library has to say while it works, as values instead of console output.
//!
//! The library never prints: training and evaluation hand [`Event`]s to a sink (`&mut dyn FnMut(&Event)`),
//! and the caller decides what to show. The CLI renders them as today's progress bar and lines; a server can
//! stream them to a browser as JSON (every event serialises).

use std::path::PathBuf;

use serde::Serialize;

/// Losses averaged over the logging window, in the order the model reports them (`loss` first).
pub type Losses = Vec<(String, f64)>;

/// One thing that happened during training or evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Event {
    /// `--resume` of a run that stopped before its first checkpoint: it restarts from step 0.
    RestartWithoutCheckpoint {
        /// The run directory.
        run: PathBuf,
    },
    /// Training is set up and about to run its first step of this session.
    TrainStart {
        /// `model.name`.
        model: String,
        /// `data.name`.
        data: String,
        /// Training examples.
        examples: usize,
        /// The preprocessing, described in words.
        preprocessing: String,
        /// Trainable parameters.
        parameters: usize,
        /// The run directory.
        run: PathBuf,
        /// The step this session starts from (0 for a new run).
        start_step: u64,
        /// The planned number of steps (`train.steps`).
        total_steps: u64,
    },
    /// One optimiser step finished.
    Step {
        /// Steps done (1-based).
        step: u64,
        /// The planned number of steps.
        total_steps: u64,
        /// Steps per second in this session so far.
        it_s: f64,
        /// Set on the steps written to `metrics.jsonl` (every `train.log_every` and the last).
        logged: Option<StepLog>,
    },
    /// The validation loss of the current weights and of the EMA weights.
    Validation {
        /// Steps done.
        step: u64,
        /// Validation loss of the trained weights.
        loss: f64,
        /// Validation loss of the EMA weights.
        loss_ema: f64,
    },
    /// A sample grid (or text) was written during training.
    SamplesWritten {
        /// Steps done.
        step: u64,
        /// The file.
        path: PathBuf,
    },
    /// A checkpoint was committed.
    CheckpointWritten {
        /// The step it holds.
        step: u64,
        /// Its folder (`RUN/checkpoints/step-…`).
        path: PathBuf,
    },
    /// The training steps of this session are over (the end-of-run samples and plot follow when finished).
    StepsEnded {
        /// Steps done.
        step: u64,
    },
    /// Training stopped early (Ctrl-C, `stop_after`, time limit) with a checkpoint; resuming continues it.
    Interrupted {
        /// Steps done.
        step: u64,
        /// The run directory to resume.
        run: PathBuf,
    },
    /// Training reached its planned steps.
    Done {
        /// Steps done.
        step: u64,
        /// The final sample grid (or text).
        samples: PathBuf,
        /// The loss curve (`loss.svg`).
        loss_curve: PathBuf,
        /// A caption model's grid: the caption of each row (8 images each).
        row_captions: Option<Vec<String>>,
    },
    /// Progress of a long evaluation.
    EvalProgress {
        /// What is evaluated (e.g. `iwae (k = 100)`).
        label: String,
        /// Examples done.
        done: usize,
        /// Examples in all.
        total: usize,
        /// Seconds since this evaluation started.
        elapsed_s: f64,
    },
}

/// What a logged step reports besides its number.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepLog {
    /// Mean losses of the window since the previous logged step.
    pub losses: Losses,
    /// The learning rate of this step.
    pub lr: f64,
    /// The global gradient norm of this step (before clipping).
    pub grad_norm: f64,
}

/// A sink that ignores every event.
pub fn ignore(_: &Event) {}
