//! A stable-Rust fuzz harness for dgm's loaders of outside bytes (issue 13).
//!
//! cargo-fuzz needs a nightly compiler; this harness needs none. Each [`Target`] owns valid seed inputs and a
//! structure-aware mutator (bit flips, byte and word sets, truncations, insertions, splices, dictionary tokens,
//! length-field edits, huge declared sizes; PNG chunks and safetensors headers are re-framed after mutation so
//! that CRCs and length prefixes stay right and the mutation reaches the parser behind them). Inputs come from
//! a seeded generator, so input `i` of target `t` under seed `s` is the same on every run.
//!
//! For every input the target's loader is called inside `catch_unwind`, and the harness checks:
//!
//! * no panic (the panic message is recorded and the input saved);
//! * no "abort": no single allocation above [`BIG_ALLOC`] while the loader runs — a loader must check a
//!   declared size against the file length or a sane bound before allocating. Requests above
//!   [`HARD_ALLOC`] are refused (the process then aborts, after naming the input file);
//! * every error's `Display` is one line.
//!
//! Used by `tests/fuzz_loaders.rs` (a few thousand inputs per loader in CI) and by
//! `examples/fuzz_loaders.rs` (the long campaign of `bench/fuzz_loaders`).

pub mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use dgm::rng::Rng;

/// One input: one or more byte strings (e.g. the image and label files of MNIST).
pub type Input = Vec<Vec<u8>>;

/// A single allocation larger than this while a loader runs counts as an abort (the inputs are at most a
/// few hundred KiB, so only a size read from the input, not the input itself, can ask for this much).
pub const BIG_ALLOC: usize = 64 << 20;
/// Allocations above this are refused, which aborts the process (after a message naming the input file).
pub const HARD_ALLOC: usize = 4 << 30;
/// The largest part a mutation may produce.
pub const MAX_PART: usize = 1 << 20;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static PANIC_MSG: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A global allocator that records, per thread, the largest single request (see [`BIG_ALLOC`]).
pub struct TrackingAlloc;

fn note(size: usize) -> bool {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size)
        }
    });
    if size > HARD_ALLOC {
        // no allocation here: a fixed message to unbuffered stderr
        let _ = std::io::stderr().write_all(
            b"fuzz: a loader asked for more than 4 GiB in one allocation; refusing (the process aborts). \
              The input is in the target's fuzz work folder (current.*).\n",
        );
        return false;
    }
    true
}

// SAFETY: every call is forwarded to `System` with the same arguments, or refused with a null pointer, which
// the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let msg = info.to_string().replace('\n', " ");
                PANIC_MSG.with(|m| *m.borrow_mut() = Some(msg));
            } else {
                default(info)
            }
        }));
    });
}

/// What one input did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The loader accepted it (and the target's property checks held).
    Ok,
    /// The loader returned this error (its `Display`).
    Err(String),
    /// The loader (or a property check) panicked with this message.
    Panic(String),
}

/// One input's outcome and the largest single allocation made while it ran.
#[derive(Clone, Debug)]
pub struct Run {
    /// What happened.
    pub outcome: Outcome,
    /// Largest single allocation request, in bytes.
    pub largest_alloc: usize,
}

impl Run {
    /// `panic`, `alloc` or `multiline` when the input exposed a problem (a panic, an allocation over
    /// [`BIG_ALLOC`], an error message of more than one line), `None` otherwise.
    pub fn kind(&self) -> Option<&'static str> {
        match &self.outcome {
            Outcome::Panic(_) => Some("panic"),
            _ if self.largest_alloc > BIG_ALLOC => Some("alloc"),
            Outcome::Err(e) if e.contains(['\n', '\r']) => Some("multiline"),
            _ => None,
        }
    }
}

/// A loader under test.
pub struct Target {
    /// Short name (`mnist`, `png`, ...).
    pub name: &'static str,
    /// The loader(s) it calls.
    pub loader: &'static str,
    /// Valid inputs; every one must load.
    pub seeds: Vec<Input>,
    /// Makes a new input from a seed.
    #[allow(clippy::type_complexity)]
    pub mutate: Box<dyn Fn(&mut Rng, &Input, &[Input]) -> Input>,
    /// Runs the loader on an input; `work` is a private scratch folder (input files go there).
    #[allow(clippy::type_complexity)]
    pub run: Box<dyn Fn(&Path, &Input) -> Result<(), String>>,
}

/// A scratch folder for `target` (in /dev/shm when there is one, so input files never touch the disk).
pub fn work_dir(target: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("dgm-fuzz-{}-{target}", std::process::id()))
}

/// Runs one input through `target` (in `work`), catching panics and measuring the largest allocation.
pub fn run_one(target: &Target, work: &Path, input: &Input) -> Run {
    install_panic_hook();
    for (k, part) in input.iter().enumerate() {
        // the current input, for the post-mortem of an abort
        let _ = std::fs::write(work.join(format!("current.{k}")), part);
    }
    LARGEST.with(|l| l.set(0));
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| (target.run)(work, input)));
    QUIET.with(|q| q.set(false));
    let largest_alloc = LARGEST.with(|l| l.get());
    let outcome = match r {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(e)) => Outcome::Err(e),
        Err(payload) => {
            let recorded = PANIC_MSG.with(|m| m.borrow_mut().take());
            let msg = recorded
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".into());
            Outcome::Panic(msg)
        }
    };
    Run {
        outcome,
        largest_alloc,
    }
}

/// The counts of one campaign on one target.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Target name.
    pub name: String,
    /// The loader(s) it calls.
    pub loader: String,
    /// Inputs run (the seeds included).
    pub inputs: usize,
    /// Inputs accepted.
    pub ok: usize,
    /// Inputs refused with an error.
    pub errors: usize,
    /// Panics.
    pub panics: usize,
    /// Inputs that made an allocation over [`BIG_ALLOC`].
    pub big_allocs: usize,
    /// Errors whose message has more than one line.
    pub multiline: usize,
    /// Distinct error messages, digits masked and cut at 120 characters.
    pub distinct_errors: usize,
    /// Largest single allocation over all inputs.
    pub largest_alloc: usize,
    /// Slowest input, in milliseconds.
    pub slowest_ms: f64,
    /// Wall time, in seconds.
    pub wall_s: f64,
    /// Seeds that did not load (a broken target, not a loader bug).
    pub bad_seeds: Vec<String>,
    /// The first findings: (input index, kind, message, saved path).
    pub findings: Vec<(usize, &'static str, String, String)>,
}

impl Report {
    /// No panic, no big allocation, no multi-line error, every seed loaded.
    pub fn clean(&self) -> bool {
        self.panics == 0 && self.big_allocs == 0 && self.multiline == 0 && self.bad_seeds.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} inputs, {} ok, {} errors ({} distinct), {} panics, {} allocations > {} MiB, {} multi-line errors",
            self.name,
            self.inputs,
            self.ok,
            self.errors,
            self.distinct_errors,
            self.panics,
            self.big_allocs,
            BIG_ALLOC >> 20,
            self.multiline
        )?;
        for s in &self.bad_seeds {
            write!(f, "\n  seed did not load: {s}")?;
        }
        for (i, kind, msg, path) in &self.findings {
            write!(f, "\n  input {i}: {kind}: {msg} (saved as {path})")?;
        }
        Ok(())
    }
}

/// An error message with the scratch folder's path removed, digit runs replaced by `#`, cut at 120
/// characters: messages that differ only in numbers count once.
fn mask(msg: &str, work: &Path) -> String {
    let msg = msg.replace(&work.display().to_string(), "");
    let mut out = String::new();
    let mut in_digits = false;
    for ch in msg.chars().take(120) {
        if ch.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(ch);
            in_digits = false;
        }
    }
    out
}

/// Saves `input` as `<dir>/<target>/<kind>-<index>.<part>`; returns the first path.
pub fn save_input(dir: &Path, target: &str, kind: &str, index: usize, input: &Input) -> String {
    let d = dir.join(target);
    let _ = std::fs::create_dir_all(&d);
    let mut first = String::new();
    for (k, part) in input.iter().enumerate() {
        let p = d.join(format!("{kind}-{index}.{k}"));
        let _ = std::fs::write(&p, part);
        if k == 0 {
            first = p.display().to_string();
        }
    }
    first
}

/// Runs `target`'s seeds, then `inputs - seeds` mutated inputs from generator `(seed, target name)`; saves
/// the first findings of each kind under `findings/<target>/`.
pub fn campaign(target: &Target, inputs: usize, seed: u64, findings: &Path) -> Report {
    let work = work_dir(target.name);
    let _ = std::fs::create_dir_all(&work);
    let mut rng = Rng::named(seed, &format!("fuzz:{}", target.name));
    let mut rep = Report {
        name: target.name.to_string(),
        loader: target.loader.to_string(),
        ..Default::default()
    };
    let mut distinct = BTreeSet::new();
    let mut saved_per_kind = std::collections::BTreeMap::<&str, usize>::new();
    let start = Instant::now();
    for i in 0..inputs {
        let input = if i < target.seeds.len() {
            target.seeds[i].clone()
        } else {
            let base = &target.seeds[rng.below(target.seeds.len())];
            (target.mutate)(&mut rng, base, &target.seeds)
        };
        let t0 = Instant::now();
        let run = run_one(target, &work, &input);
        rep.slowest_ms = rep.slowest_ms.max(t0.elapsed().as_secs_f64() * 1e3);
        rep.inputs += 1;
        rep.largest_alloc = rep.largest_alloc.max(run.largest_alloc);
        if run.largest_alloc > BIG_ALLOC {
            rep.big_allocs += 1;
        }
        match &run.outcome {
            Outcome::Ok => rep.ok += 1,
            Outcome::Err(e) => {
                rep.errors += 1;
                if e.contains(['\n', '\r']) {
                    rep.multiline += 1;
                }
                if distinct.len() < 100_000 {
                    distinct.insert(mask(e, &work));
                }
            }
            Outcome::Panic(_) => rep.panics += 1,
        }
        if i < target.seeds.len() && run.outcome != Outcome::Ok {
            rep.bad_seeds.push(format!("seed {i}: {:?}", run.outcome));
        }
        if let Some(kind) = run.kind() {
            let n = saved_per_kind.entry(kind).or_default();
            *n += 1;
            if *n <= 5 {
                let path = save_input(findings, target.name, kind, i, &input);
                let msg = match &run.outcome {
                    Outcome::Ok => {
                        format!("accepted, largest allocation {} bytes", run.largest_alloc)
                    }
                    Outcome::Err(e) | Outcome::Panic(e) => format!(
                        "{} (largest allocation {} bytes)",
                        e.escape_debug(),
                        run.largest_alloc
                    ),
                };
                rep.findings.push((i, kind, msg, path));
            }
        }
    }
    rep.distinct_errors = distinct.len();
    rep.wall_s = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&work);
    rep
}

// ------------------------------------------------------------------------------------------------------
// Mutations

/// Interesting integers for length and size fields.
fn interesting(rng: &mut Rng, len: usize) -> u64 {
    const V: &[u64] = &[
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        16,
        28,
        0x7f,
        0x80,
        0xff,
        0x100,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fffe,
        0xffff_ffff,
        0x1_0000_0000,
        1 << 40,
        i64::MAX as u64,
        u64::MAX,
        u64::MAX - 1,
    ];
    match rng.below(4) {
        0 => (len as u64)
            .wrapping_add(rng.below(5) as u64)
            .wrapping_sub(2),
        1 => rng.next_u64() >> rng.below(64),
        _ => V[rng.below(V.len())],
    }
}

/// A random position in `0..=len`, biased towards the first 64 bytes (where headers are).
fn pos(rng: &mut Rng, len: usize) -> usize {
    if len == 0 {
        0
    } else if rng.below(2) == 0 {
        rng.below(len.min(64) + 1)
    } else {
        rng.below(len + 1)
    }
}

/// Applies 1–`max_ops` random byte-level mutations to `data`. `dict` holds tokens of the format (keywords,
/// magic numbers); `others` are other inputs to splice with.
pub fn mutate_bytes(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    dict: &[&[u8]],
    others: &[&[u8]],
    max_ops: usize,
) {
    let ops = 1 + rng.below(max_ops.max(1));
    for _ in 0..ops {
        let len = data.len();
        match rng.below(13) {
            // bit flip
            0 if len > 0 => {
                let i = pos(rng, len - 1);
                data[i] ^= 1 << rng.below(8);
            }
            // byte set
            1 if len > 0 => {
                let i = pos(rng, len - 1);
                const B: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'\n', b'"', b'0', b'9', b'-', b'.'];
                data[i] = if rng.below(2) == 0 {
                    B[rng.below(B.len())]
                } else {
                    rng.below(256) as u8
                };
            }
            // word set: 2, 4 or 8 bytes, little or big endian
            2 | 3 if len > 0 => {
                let w = [2, 4, 8][rng.below(3)];
                let v = interesting(rng, len);
                let bytes: Vec<u8> = if rng.below(2) == 0 {
                    v.to_le_bytes()[..w].to_vec()
                } else {
                    v.to_be_bytes()[8 - w..].to_vec()
                };
                let i = if rng.below(2) == 0 {
                    // aligned in the header
                    (rng.below(16) * w).min(len.saturating_sub(1))
                } else {
                    pos(rng, len - 1)
                };
                for (k, b) in bytes.into_iter().enumerate() {
                    if i + k < len {
                        data[i + k] = b;
                    }
                }
            }
            // truncate
            4 => {
                let i = pos(rng, len);
                data.truncate(i);
            }
            // insert random bytes
            5 => {
                let i = pos(rng, len);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
                data.splice(i..i, ins);
            }
            // delete a range
            6 if len > 0 => {
                let i = pos(rng, len - 1);
                let n = 1 + rng.below((len - i).min(64));
                data.drain(i..i + n);
            }
            // repeat a chunk many times (deep nesting, long runs)
            7 if len > 0 => {
                let i = pos(rng, len - 1);
                let n = 1 + rng.below((len - i).min(8));
                let chunk = data[i..i + n].to_vec();
                let times = [2, 16, 256, 4096, 40_000][rng.below(5)];
                let times = times.min(MAX_PART.saturating_sub(len) / n);
                let rep = chunk.repeat(times);
                data.splice(i..i, rep);
            }
            // splice with another input
            8 if !others.is_empty() => {
                let o = others[rng.below(others.len())];
                let a = pos(rng, len);
                let b = rng.below(o.len() + 1);
                data.truncate(a);
                data.extend_from_slice(&o[b..]);
            }
            // dictionary: insert or overwrite
            9 | 10 if !dict.is_empty() => {
                let t = dict[rng.below(dict.len())];
                let i = pos(rng, len);
                if rng.below(2) == 0 {
                    data.splice(i..i, t.iter().copied());
                } else {
                    let end = (i + t.len()).min(len);
                    data.splice(i..end, t.iter().copied());
                }
            }
            // arithmetic on a byte
            11 if len > 0 => {
                let i = pos(rng, len - 1);
                let d = 1 + rng.below(16) as u8;
                data[i] = if rng.below(2) == 0 {
                    data[i].wrapping_add(d)
                } else {
                    data[i].wrapping_sub(d)
                };
            }
            // copy a range over another place
            12 if len > 1 => {
                let a = rng.below(len);
                let b = rng.below(len);
                let n = 1 + rng.below((len - a.max(b)).min(32));
                let chunk = data[a..a + n].to_vec();
                data[b..b + n].copy_from_slice(&chunk);
            }
            _ => {}
        }
        data.truncate(MAX_PART);
    }
}

/// Text mutations: byte mutations plus line operations (delete, duplicate, swap, move) and replacing a
/// number with a dictionary token.
pub fn mutate_text(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&[u8]], others: &[&[u8]]) {
    let ops = 1 + rng.below(3);
    for _ in 0..ops {
        match rng.below(6) {
            0 | 1 => mutate_bytes(rng, data, dict, others, 2),
            2 => {
                // replace a number or a quoted string by a dictionary token
                let starts: Vec<usize> = (0..data.len())
                    .filter(|&i| {
                        (data[i].is_ascii_digit() || data[i] == b'"')
                            && (i == 0 || !data[i - 1].is_ascii_alphanumeric())
                    })
                    .collect();
                if starts.is_empty() || dict.is_empty() {
                    continue;
                }
                let s = starts[rng.below(starts.len())];
                let e = if data[s] == b'"' {
                    data[s + 1..]
                        .iter()
                        .position(|&c| c == b'"')
                        .map_or(data.len(), |p| s + p + 2)
                } else {
                    data[s..]
                        .iter()
                        .position(|c| !(c.is_ascii_alphanumeric() || b".-+_".contains(c)))
                        .map_or(data.len(), |p| s + p)
                };
                let t = dict[rng.below(dict.len())];
                data.splice(s..e, t.iter().copied());
            }
            _ => {
                let mut lines: Vec<Vec<u8>> =
                    data.split(|&c| c == b'\n').map(|l| l.to_vec()).collect();
                if lines.is_empty() {
                    continue;
                }
                let a = rng.below(lines.len());
                let b = rng.below(lines.len());
                match rng.below(4) {
                    0 => {
                        lines.remove(a);
                    }
                    1 => {
                        let l = lines[a].clone();
                        lines.insert(b, l);
                    }
                    2 => lines.swap(a, b),
                    _ => {
                        let l = lines.remove(a);
                        let b = b.min(lines.len());
                        lines.insert(b, l);
                    }
                }
                *data = lines.join(&b'\n');
            }
        }
        data.truncate(MAX_PART);
    }
}
