//! Which instruction set dgm's own CPU loops run on: the best the CPU has (AVX-512, AVX2 + FMA, or the
//! target's baseline build — SSE2 on x86-64), or a slower one forced with the environment variable
//! [`ISA_ENV`] (`DGM_ISA=avx2` or `DGM_ISA=baseline`), so that every path can be tested on any host.
//!
//! The loops are written so that each build gives the same bits: they fix their summation order and
//! nothing asks for fused multiply-adds, so the wider vectors only do the same arithmetic more at a time.
//! The one exception is the convolution micro-kernels (`implicit.rs`), written with FMA intrinsics on
//! AVX2 and AVX-512: their builds agree to rounding (tested against candle's stock convolution each).
//! The matrix products are not dgm's loops: they run in the `gemm` crate, which picks its own AVX-512 /
//! AVX2 + FMA / scalar micro-kernels by CPU detection (its FMA builds round differently from its scalar
//! one) and which `DGM_ISA` does not reach.

use std::sync::OnceLock;

use crate::{Error, Result};

/// The environment variable that forces a slower instruction set on dgm's own loops.
pub const ISA_ENV: &str = "DGM_ISA";

/// An instruction-set build of dgm's CPU loops, slowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// The target's baseline build (SSE2 vectors on x86-64).
    Baseline,
    /// AVX2 + FMA (x86-64 only).
    Avx2,
    /// AVX-512 F/BW/DQ/VL with AVX2 + FMA (x86-64 only).
    Avx512,
}

impl Isa {
    /// Every build, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Baseline, Isa::Avx2, Isa::Avx512];

    /// The name `DGM_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The best build this CPU runs.
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                let avx2 = has!("avx2") && has!("fma");
                if avx2
                    && has!("avx512f")
                    && has!("avx512bw")
                    && has!("avx512dq")
                    && has!("avx512vl")
                {
                    return Isa::Avx512;
                }
                if avx2 {
                    return Isa::Avx2;
                }
            }
            Isa::Baseline
        })
    }

    /// The builds this CPU runs, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&i| i <= Isa::detected())
            .collect()
    }

    /// The build named `name`, if this CPU runs it; the error names the valid choices.
    pub fn parse(name: &str) -> Result<Isa> {
        let valid = || {
            Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name() == name.trim())
            .ok_or_else(|| {
                Error::invalid(
                    ISA_ENV,
                    format!("unknown instruction set {name:?}: valid are {}", valid()),
                )
            })?;
        if isa > Isa::detected() {
            return Err(Error::invalid(
                ISA_ENV,
                format!("this CPU cannot run {name:?}: it runs {}", valid()),
            ));
        }
        Ok(isa)
    }
}

/// `DGM_ISA` as set in the environment: `None` when unset, an error when it names no build this CPU runs
/// (programs call this once at start so that a typo is reported rather than ignored; [`isa`] then uses the
/// detected build).
pub fn isa_from_env() -> Result<Option<Isa>> {
    match std::env::var(ISA_ENV) {
        Ok(v) => Isa::parse(&v).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(Error::invalid(ISA_ENV, e.to_string())),
    }
}

#[cfg(test)]
thread_local! {
    static FORCED: std::cell::Cell<Option<Isa>> = const { std::cell::Cell::new(None) };
}

/// The build dgm's loops run on now: `DGM_ISA` if set to a build this CPU runs, else [`Isa::detected`].
#[inline]
pub fn isa() -> Isa {
    #[cfg(test)]
    if let Some(i) = FORCED.with(|f| f.get()) {
        return i;
    }
    static SELECTED: OnceLock<Isa> = OnceLock::new();
    *SELECTED.get_or_init(|| isa_from_env().ok().flatten().unwrap_or_else(Isa::detected))
}

/// Runs `f` with this thread's loops on `isa` (tests only; rayon's other threads are not affected).
#[cfg(test)]
pub(crate) fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    assert!(isa <= Isa::detected(), "{isa:?} is not available here");
    let old = FORCED.with(|c| c.replace(Some(isa)));
    let r = f();
    FORCED.with(|c| c.set(old));
    r
}

/// Defines `fn $name(args) [-> R]` that runs `$body(args)` compiled for the build [`isa`] selects:
/// AVX-512, AVX2 + FMA, or the baseline. `$body` should be `#[inline(always)]` so that each build gets its
/// own copy of the loop.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::nn::kernels::isa::isa() {
                    // SAFETY: `isa()` selects a build only when the CPU runs it (`Isa::detected`).
                    $crate::nn::kernels::isa::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::nn::kernels::isa::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::nn::kernels::isa::Isa::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused_with_the_choices() {
        for i in Isa::available() {
            assert_eq!(Isa::parse(i.name()).unwrap(), i);
        }
        let e = Isa::parse("sse9").unwrap_err().to_string();
        assert!(e.contains("sse9") && e.contains("baseline"), "{e}");
        if Isa::detected() < Isa::Avx512 {
            let e = Isa::parse("avx512").unwrap_err().to_string();
            assert!(e.contains("cannot run"), "{e}");
        }
    }

    #[test]
    fn a_forced_build_applies_to_this_thread_only_while_forced() {
        let before = isa();
        with_isa(Isa::Baseline, || assert_eq!(isa(), Isa::Baseline));
        assert_eq!(isa(), before);
    }
}
